package lockout

import (
	"testing"
	"time"
)

// LockCounts agrees with List, scope by scope, and forgets a lock once it
// has run out.
func TestLockCountsAgreesWithList(t *testing.T) {
	g, clk, _ := testGuard(t, func(o *Options) {
		o.AccountIPThreshold, o.IPThreshold = 2, 3
	})
	want := func(m map[string]int) {
		t.Helper()
		got := g.LockCounts()
		for _, s := range []Scope{ScopeAccountIP, ScopeAccount, ScopeIP, ScopePrefix} {
			if got[s.String()] != m[s.String()] {
				t.Errorf("LockCounts()[%s] = %d, want %d (all: %v)", s, got[s.String()], m[s.String()], got)
			}
		}
		if len(got) != 4 {
			t.Errorf("LockCounts() lists %d scopes, want 4: %v", len(got), got)
		}
		n := 0
		for _, c := range got {
			n += c
		}
		if l := g.List(); len(l) != n {
			t.Errorf("LockCounts() sums to %d, List has %d", n, len(l))
		}
	}
	want(nil)
	ip := v4(1, 2, 3)
	g.Failure("alice", ip, "wrong-1")
	g.Failure("alice", ip, "wrong-2") // locks alice at ip
	want(map[string]int{"account+ip": 1})
	g.Failure("bob", ip, "wrong-3") // the third failure from ip locks it
	want(map[string]int{"account+ip": 1, "ip": 1})
	clk.Add(2 * time.Hour)
	want(nil)
}
