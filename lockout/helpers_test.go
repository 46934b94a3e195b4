package lockout

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/fakeclock"
)

// testKey keys the fingerprints in tests.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// base is aligned to every default window, so bucket arithmetic in tests
// is exact.
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// clock is the tests' settable clock.
type clock = fakeclock.Clock

// testGuard opens a Guard on a fresh database with a fake clock; edit
// adjusts the options.
func testGuard(t testing.TB, edit func(*Options)) (*Guard, *clock, string) {
	t.Helper()
	clk := fakeclock.New(base)
	path := filepath.Join(t.TempDir(), "kanmon.db")
	return openGuard(t, path, clk, edit), clk, path
}

// openGuard opens a Guard on the database at path with the clock clk;
// edit, when not nil, adjusts the options. It is closed at cleanup
// (closing it before is fine).
func openGuard(t testing.TB, path string, clk *clock, edit func(*Options)) *Guard {
	t.Helper()
	o := Options{Now: clk.Now}
	if edit != nil {
		edit(&o)
	}
	g, err := Open(path, testKey, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// addr parses an address or fails the test.
func addr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// v4 returns 10.a.b.c, v6 2001:db8:a:b::c.
func v4(a, b, c int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(a), byte(b), byte(c)})
}

func v6(a, b, c int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x::%x", a, b, c))
}

// wantVerdict fails unless v has the outcome (and, for Locked, the scope).
func wantVerdict(t testing.TB, v Verdict, o Outcome, s Scope) {
	t.Helper()
	if v.Outcome != o || (o == Locked && v.Scope != s) {
		t.Fatalf("verdict %q (%+v), want outcome %d scope %v", v, v, o, s)
	}
}

// fail records n failed logins of user from ip, with the wrong secrets
// prefix0, prefix1, ….
func fail(g *Guard, user string, ip netip.Addr, prefix string, n int) {
	for i := range n {
		g.Failure(user, ip, fmt.Sprint(prefix, i))
	}
}

// attempt is one login as the proxy runs it against a backend that rejects
// everything: Check, then Failure if allowed. It reports whether the
// backend was asked.
func attempt(g *Guard, user string, ip netip.Addr, secret string) (Verdict, bool) {
	v := g.Check(user, ip, secret)
	if !v.Allowed() {
		return v, false
	}
	g.Failure(user, ip, secret)
	return v, true
}
