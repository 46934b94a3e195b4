package auth

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/config"
)

func TestScopeProtocolsMatchConfig(t *testing.T) {
	want := []string{config.ProtocolIMAP, config.ProtocolPOP3, config.ProtocolSubmission}
	if !slices.Equal(ScopeProtocols, want) {
		t.Fatalf("ScopeProtocols = %v, config's protocols are %v", ScopeProtocols, want)
	}
}

func TestParseProtocols(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{"all", nil, ""},
		{"imap", []string{"imap"}, ""},
		{" Submission , IMAP", []string{"imap", "submission"}, ""},
		{"pop3,imap,submission", []string{"imap", "pop3", "submission"}, ""},
		{"smtp", nil, `unknown protocol "smtp"`},
		{"imap,,pop3", nil, `unknown protocol ""`},
		{"imap,IMAP", nil, `"imap" is listed twice`},
	} {
		got, err := ParseProtocols(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseProtocols(%q) error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("ParseProtocols(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if FormatProtocols(nil) != "all" || FormatProtocols([]string{"imap", "pop3"}) != "imap,pop3" {
		t.Error("FormatProtocols")
	}
}

func TestDecideScope(t *testing.T) {
	f := newPolicyFixture(t)
	f.accounts.Accounts[0].Passcodes[1].Protocols = []string{"imap", "submission"} // iPhone
	p := NewPolicy(f.accounts, f.pepper, testTrusted(), true)
	ip := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		secret, proto string
		kind          Kind
		reason        Reason
	}{
		{f.iphone, "imap", Passcode, ReasonPasscode},
		{f.iphone, "submission", Passcode, ReasonPasscode},
		{f.iphone, "pop3", Refuse, ReasonOutOfScope},
		{f.iphone, "", Passcode, ReasonPasscode},
		{f.thunderbird, "pop3", Passcode, ReasonPasscode}, // unscoped
	} {
		d := p.Decide(Attempt{User: "alice", Secret: tc.secret, ClientIP: ip, Protocol: tc.proto})
		if d.Kind != tc.kind || d.Reason != tc.reason {
			t.Errorf("%s: %v %q, want %v %q", tc.proto, d.Kind, d.Reason, tc.kind, tc.reason)
		}
		if d.Kind == Refuse && d.App != "iPhone" {
			t.Errorf("out-of-scope refusal names app %q, want iPhone (for the log)", d.App)
		}
	}

	// Narrowing the scope on reload: a session on a protocol left out no
	// longer stands; one inside it does.
	imapSession := p.Decide(Attempt{User: "alice", Secret: f.iphone, ClientIP: ip, Protocol: "imap"})
	subSession := p.Decide(Attempt{User: "alice", Secret: f.iphone, ClientIP: ip, Protocol: "submission"})
	f.accounts.Accounts[0].Passcodes[1].Protocols = []string{"submission"}
	narrowed := NewPolicy(f.accounts, f.pepper, testTrusted(), true)
	if narrowed.Stands(imapSession, ip) || !narrowed.Stands(subSession, ip) {
		t.Error("Stands ignores a narrowed scope")
	}
}

func TestPasscodeIDs(t *testing.T) {
	f := newPolicyFixture(t)
	p := NewPolicy(f.accounts, f.pepper, testTrusted(), true)
	d := p.Decide(Attempt{User: "alice", Secret: f.thunderbird, ClientIP: netip.MustParseAddr("10.0.0.1")})
	want := f.accounts.Accounts[0].Passcode("Thunderbird").ID()
	if d.PasscodeID() != want || len(want) != 16 {
		t.Fatalf("Decision.PasscodeID %q, AppPasscode.ID %q", d.PasscodeID(), want)
	}
	if other := f.accounts.Accounts[0].Passcode("iPhone").ID(); other == want {
		t.Error("two passcodes share an ID")
	}
	ids := p.PasscodeIDs()
	if len(ids) != 2 || !ids[want] {
		t.Errorf("PasscodeIDs: %v", ids)
	}
	if (Decision{Kind: Passthrough}).PasscodeID() != "" {
		t.Error("a passthrough decision has a passcode ID")
	}
}

func TestScopeInAccountsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "accounts.toml")
	s := OpenStore(path)
	if _, err := EnableTwoFA(s, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := AddScopedPasscode(s, dir, "alice", "Cybozu", []string{"pop3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := AddPasscode(s, dir, "alice", "Thunderbird"); err != nil {
		t.Fatal(err)
	}
	if _, err := AddScopedPasscode(s, dir, "alice", "Bad", []string{"smtp"}); err == nil {
		t.Error("an unknown protocol was accepted")
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "protocols = [\"pop3\"]\n") || strings.Count(string(data), "protocols") != 1 {
		t.Fatalf("accounts file:\n%s", data)
	}
	a, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	got := [][]string{a.Accounts[0].Passcodes[0].Protocols, a.Accounts[0].Passcodes[1].Protocols}
	if !reflect.DeepEqual(got, [][]string{{"pop3"}, nil}) {
		t.Errorf("protocols read back: %q", got)
	}

	for _, tc := range []struct{ scope, want string }{
		{`["smtp"]`, `accounts.toml:8: account "alice": passcode "T": protocols: unknown protocol "smtp"`},
		{`["imap", "imap"]`, `accounts.toml:8: account "alice": passcode "T": protocols: "imap" is listed twice`},
		{`"imap"`, `accounts.toml:8: `},
	} {
		doc := "[[account]]\nuser = \"alice\"\n\n[[account.passcode]]\napp = \"T\"\ncreated = 2026-11-25T12:01:00Z\nhash = \"" + validHash + "\"\nprotocols = " + tc.scope + "\n"
		_, err := ParseAccounts("accounts.toml", []byte(doc))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("protocols = %s: error %v, want %q", tc.scope, err, tc.want)
		}
	}
}
