package auth

import (
	"regexp"
	"testing"
)

// TestReasonsAreDistinct: every reason has its own log text and its own
// snake_case metrics label, so neither a log reader nor a dashboard can
// mistake one for another, and only the reasons that say a secret was
// wrong count toward lockout.
func TestReasonsAreDistinct(t *testing.T) {
	texts, labels := map[string]Reason{}, map[string]Reason{}
	label := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	counting := map[Reason]bool{ReasonNotPasscode: true, ReasonNoMatch: true, ReasonNoPasscodes: true, ReasonOutOfScope: true, ReasonBackendRejected: true}
	for r := ReasonEmptyUser; r <= LastReason; r++ {
		if prev, ok := texts[r.String()]; ok {
			t.Errorf("%d and %d share the log text %q", prev, r, r.String())
		}
		if prev, ok := labels[r.Label()]; ok || r.Label() == "other" || !label.MatchString(r.Label()) {
			t.Errorf("reason %q: label %q is shared with %d or not a fixed snake_case label", r, r.Label(), prev)
		}
		texts[r.String()], labels[r.Label()] = r, r
		if r.Counts() != counting[r] {
			t.Errorf("reason %q: Counts() = %v, want %v", r, r.Counts(), counting[r])
		}
	}
	if got := Reason(200).Label(); got != "other" {
		t.Errorf("an unknown reason's label = %q, want other", got)
	}
}
