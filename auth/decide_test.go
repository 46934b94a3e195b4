package auth

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// policyFixture: alice has 2FA with passcodes Thunderbird and iPhone; carol
// has 2FA but no passcodes; everyone else has no 2FA. Trusted: 10.0.0.0/8
// and 2001:db8::/32.
type policyFixture struct {
	pepper      Pepper
	accounts    *Accounts
	thunderbird string // alice's Thunderbird passcode
	iphone      string // alice's iPhone passcode
}

func newPolicyFixture(t *testing.T) *policyFixture {
	t.Helper()
	f := &policyFixture{pepper: testPepper(7), thunderbird: "THUNDERBIRDPASSA", iphone: "IPHONEPASSCODEAA"}
	hash := func(p string) string {
		h, err := HashPasscode(f.pepper, p)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	f.accounts = &Accounts{Accounts: []Account{
		{User: "Alice", Enabled: time.Now(), Passcodes: []AppPasscode{
			{App: "Thunderbird", Hash: hash(f.thunderbird)},
			{App: "iPhone", Hash: hash(f.iphone)},
		}},
		{User: "carol", Enabled: time.Now()},
	}}
	return f
}

func testTrusted() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
}

func TestDecide(t *testing.T) {
	f := newPolicyFixture(t)
	strict := NewPolicy(f.accounts, f.pepper, testTrusted(), true)
	lax := NewPolicy(f.accounts, f.pepper, testTrusted(), false)
	inside := netip.MustParseAddr("10.1.2.3")
	mapped := netip.MustParseAddr("::ffff:10.1.2.3")
	inside6 := netip.MustParseAddr("2001:db8::5")
	outside := netip.MustParseAddr("192.0.2.1")
	outsideMapped := netip.MustParseAddr("::ffff:192.0.2.1")

	for _, tc := range []struct {
		name   string
		p      *Policy
		a      Attempt
		kind   Kind
		user   string
		app    string
		reason Reason
	}{
		{"empty user", strict, Attempt{User: "", Secret: "x", ClientIP: inside}, Refuse, "", "", ReasonEmptyUser},
		{"empty secret", strict, Attempt{User: "bob", Secret: "", ClientIP: inside}, Refuse, "bob", "", ReasonEmptySecret},
		{"2FA passcode", strict, Attempt{User: "Alice", Secret: f.thunderbird, ClientIP: outside}, Passcode, "Alice", "Thunderbird", ReasonPasscode},
		{"2FA second passcode, other case, spaced", strict, Attempt{User: "alice", Secret: strings.ToLower(FormatPasscode(f.iphone)), ClientIP: outside}, Passcode, "Alice", "iPhone", ReasonPasscode},
		{"2FA passcode inside", strict, Attempt{User: "ALICE", Secret: f.iphone, ClientIP: inside}, Passcode, "Alice", "iPhone", ReasonPasscode},
		{"2FA password inside", strict, Attempt{User: "alice", Secret: "hunter2", ClientIP: inside}, Refuse, "Alice", "", ReasonNotPasscode},
		{"2FA password outside, lax", lax, Attempt{User: "alice", Secret: "hunter2", ClientIP: outside}, Refuse, "Alice", "", ReasonNotPasscode},
		{"2FA wrong passcode", strict, Attempt{User: "alice", Secret: "ABCDEFGHIJKLMNOP", ClientIP: outside}, Refuse, "Alice", "", ReasonNoMatch},
		{"2FA without passcodes", strict, Attempt{User: "carol", Secret: "ABCDEFGHIJKLMNOP", ClientIP: inside}, Refuse, "carol", "", ReasonNoPasscodes},
		{"no 2FA inside", strict, Attempt{User: "bob", Secret: "hunter2", ClientIP: inside}, Passthrough, "bob", "", ReasonTrusted},
		{"no 2FA inside, IPv4-mapped", strict, Attempt{User: "bob", Secret: "hunter2", ClientIP: mapped}, Passthrough, "bob", "", ReasonTrusted},
		{"no 2FA inside, IPv6", strict, Attempt{User: "bob", Secret: "hunter2", ClientIP: inside6}, Passthrough, "bob", "", ReasonTrusted},
		{"no 2FA passcode-shaped password inside", strict, Attempt{User: "Bob", Secret: f.thunderbird, ClientIP: inside}, Passthrough, "Bob", "", ReasonTrusted},
		{"no 2FA outside, strict", strict, Attempt{User: "bob", Secret: "hunter2", ClientIP: outside}, Refuse, "bob", "", ReasonOutside},
		{"no 2FA outside mapped, strict", strict, Attempt{User: "bob", Secret: "hunter2", ClientIP: outsideMapped}, Refuse, "bob", "", ReasonOutside},
		{"no 2FA no address, strict", strict, Attempt{User: "bob", Secret: "hunter2"}, Refuse, "bob", "", ReasonOutside},
		{"no 2FA outside, lax", lax, Attempt{User: "bob", Secret: "hunter2", ClientIP: outside}, Passthrough, "bob", "", ReasonOutsideAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.p.Decide(tc.a)
			if d.Kind != tc.kind || d.User != tc.user || d.App != tc.app || d.Reason != tc.reason {
				t.Errorf("Decide = {%v %q %q %q}, want {%v %q %q %q}", d.Kind, d.User, d.App, d.Reason, tc.kind, tc.user, tc.app, tc.reason)
			}
			if tc.a.Secret != "" && strings.Contains(d.Reason.String(), tc.a.Secret) {
				t.Errorf("reason %q contains the secret", d.Reason)
			}
		})
	}
}

func TestDecideOtherPepper(t *testing.T) {
	f := newPolicyFixture(t)
	p := NewPolicy(f.accounts, testPepper(8), testTrusted(), true)
	if d := p.Decide(Attempt{User: "alice", Secret: f.thunderbird}); d.Kind != Refuse {
		t.Errorf("passcode accepted under another pepper: %+v", d)
	}
}

func TestPolicyIsASnapshot(t *testing.T) {
	f := newPolicyFixture(t)
	trusted := append([]netip.Prefix(nil), testTrusted()...)
	p := NewPolicy(f.accounts, f.pepper, trusted, true)
	f.accounts.Accounts = nil
	trusted[0] = netip.MustParsePrefix("192.0.2.0/24")
	if d := p.Decide(Attempt{User: "alice", Secret: f.thunderbird}); d.Kind != Passcode {
		t.Errorf("policy changed with its inputs: %+v", d)
	}
	if !p.Trusted(netip.MustParseAddr("10.0.0.1")) || p.Trusted(netip.MustParseAddr("192.0.2.1")) {
		t.Errorf("policy trusted list changed with its input")
	}
}

func TestTrusted(t *testing.T) {
	p := NewPolicy(nil, nil, []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("::ffff:192.168.0.0/112"), // written IPv4-mapped
		netip.MustParsePrefix("fe80::/10"),
	}, true)
	for addr, want := range map[string]bool{
		"127.0.0.1":          true,
		"::ffff:127.0.0.1":   true,
		"127.0.0.2":          false,
		"192.168.3.4":        true,
		"::ffff:192.168.3.4": true,
		"192.169.0.1":        false,
		"fe80::1%eth0":       true,
		"::1":                false,
	} {
		if got := p.Trusted(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Trusted(%s) = %v, want %v", addr, got, want)
		}
	}
	if p.Trusted(netip.Addr{}) {
		t.Errorf("the zero address is trusted")
	}
}

func TestStands(t *testing.T) {
	f := newPolicyFixture(t)
	inside, outside := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.0.2.1")
	p := NewPolicy(f.accounts, f.pepper, testTrusted(), true)
	dPass := p.Decide(Attempt{User: "alice", Secret: f.thunderbird, ClientIP: outside})
	dThrough := p.Decide(Attempt{User: "bob", Secret: "pw", ClientIP: inside})
	if !p.Stands(dPass, outside) || !p.Stands(dThrough, inside) {
		t.Fatalf("decisions do not stand under their own policy")
	}
	if p.Stands(p.Decide(Attempt{User: "bob", Secret: "pw", ClientIP: outside}), outside) {
		t.Errorf("a refusal stands")
	}

	// Thunderbird revoked and re-created under the same name.
	h, _ := HashPasscode(f.pepper, "NEWTHUNDERBIRDPA")
	f.accounts.Accounts[0].Passcodes[0].Hash = h
	// bob turns 2FA on.
	f.accounts.Accounts = append(f.accounts.Accounts, Account{User: "BOB"})
	p2 := NewPolicy(f.accounts, f.pepper, testTrusted(), true)
	if p2.Stands(dPass, outside) {
		t.Errorf("session of a revoked passcode stands")
	}
	if p2.Stands(dThrough, inside) {
		t.Errorf("password session stands after 2FA was turned on")
	}
	dIphone := p.Decide(Attempt{User: "alice", Secret: f.iphone})
	if !p2.Stands(dIphone, outside) {
		t.Errorf("untouched passcode session does not stand")
	}
	if !p2.TwoFA("bob") || p2.TwoFA("dave") {
		t.Errorf("TwoFA wrong")
	}
}

func TestDecideConcurrent(t *testing.T) {
	f := newPolicyFixture(t)
	p := NewPolicy(f.accounts, f.pepper, testTrusted(), true)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if d := p.Decide(Attempt{User: "alice", Secret: f.iphone}); d.Kind != Passcode {
					t.Errorf("got %v", d.Kind)
				}
			}
		})
	}
	wg.Wait()
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Refuse: "refuse", Passcode: "passcode", Passthrough: "passthrough", Kind(9): "Kind(9)"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q", int(k), k.String())
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	pepper := testPepper(7)
	acct := Account{User: "alice"}
	for i := range 5 {
		h, _ := HashPasscode(pepper, "ABCDEFGHIJKLMNO"+string(rune('A'+i)))
		acct.Passcodes = append(acct.Passcodes, AppPasscode{App: string(rune('a' + i)), Hash: h})
	}
	p := NewPolicy(&Accounts{Accounts: []Account{acct}}, pepper, testTrusted(), true)
	a := Attempt{User: "alice", Secret: "abcd efgh ijkl mnoe", ClientIP: netip.MustParseAddr("192.0.2.1")}
	for b.Loop() {
		if p.Decide(a).Kind != Passcode {
			b.Fatal("no match")
		}
	}
}
