package lockout

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// On the campus (SetExempt, 10.1.0.0/16 here; v4 gives 10.x.y.z), a spray over many accounts from one NAT
// address neither counts nor locks the address or its prefix, so a user
// who never logged in from there still gets through; the account and
// account+IP scopes still apply there.
func TestExemptNetworks(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	g.SetExempt([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::ffff:192.0.2.0/120")})
	nat := netip.MustParseAddr("10.1.2.3")
	for i := range 100 {
		v, _ := attempt(g, fmt.Sprintf("user%03d", i), nat, "Spring2026!")
		wantVerdict(t, v, Allow, 0)
	}
	wantVerdict(t, g.Check("newcomer", nat, "right"), Allow, 0)
	info := g.Failure("newcomer", nat, "wrong-1")
	if info.IP != 0 || info.Prefix != 0 || info.AccountIP != 1 || info.Account != 1 {
		t.Errorf("failure on the campus counted %+v, want account and account+ip only", info)
	}
	for i := range 10 {
		g.Failure("dave", nat, fmt.Sprintf("wrong-%d", i))
	}
	wantVerdict(t, g.Check("dave", nat, "x"), Locked, ScopeAccountIP)
	// 192.0.2.0/24, given IPv4-mapped, exempts the IPv4 addresses.
	if !g.exempted(netip.MustParseAddr("192.0.2.9")) || g.exempted(netip.MustParseAddr("192.0.3.9")) {
		t.Error("a mapped prefix does not exempt its IPv4 addresses, or exempts others")
	}
	// Outside the campus the IP scope still locks a spray.
	out := v4(7, 7, 7)
	for i := range 30 {
		g.Failure(fmt.Sprintf("user%03d", i), out, "Summer2026!")
	}
	wantVerdict(t, g.Check("nobody", out, "x"), Locked, ScopeIP)
}

// The address-level known-good index: an address from which any account
// logged in is known-good until KnownGoodTTL, and stays so across a
// restart (it is rebuilt from the persisted per-account entries).
func TestKnownGoodIP(t *testing.T) {
	g, clk, path := testGuard(t, func(o *Options) { o.BatchDelay = time.Millisecond })
	ip, other := v4(9, 9, 9), v4(9, 9, 10)
	if g.KnownGoodIP(ip) {
		t.Fatal("known-good before any login")
	}
	g.Success("carol", ip)
	if !g.KnownGoodIP(ip) || g.KnownGoodIP(other) {
		t.Fatal("the login's address is not known-good, or another one is")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	g = openGuard(t, path, clk, nil)
	if !g.KnownGoodIP(ip) {
		t.Fatal("known-good address forgotten across a restart")
	}
	clk.Add(g.Options().KnownGoodTTL + time.Second)
	if g.KnownGoodIP(ip) {
		t.Fatal("known-good after KnownGoodTTL")
	}
}

// A failure without an account (a refused user name) counts in the IP
// and prefix scopes only: 30 of them lock the address, no account is
// touched, and the campus is not counted.
func TestFailureAddress(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	g.SetExempt([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")})
	ip := v4(7, 7, 8)
	var info FailureInfo
	for range 30 {
		info = g.FailureAddress(ip)
	}
	if info.IP != 30 || info.AccountIP != 0 || info.Account != 0 || info.Locked != ScopeIP {
		t.Errorf("after 30: %+v, want ip 30, no account counts, locked ip", info)
	}
	wantVerdict(t, g.Check("anyone", ip, "x"), Locked, ScopeIP)
	if got := g.FailureAddress(v4(1, 2, 3)); got.IP != 0 || got.Prefix != 0 {
		t.Errorf("the campus was counted: %+v", got)
	}
	for _, e := range g.List() {
		if e.User != "" {
			t.Errorf("an account entry appeared: %+v", e)
		}
	}
}
