package lockout

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOptionsDefaultsAndErrors(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultOptions()
	if o.AccountIPThreshold != 10 || o.AccountThreshold != 50 || o.IPThreshold != 30 || o.PrefixThreshold != 100 ||
		o.MaxAccountFailures != 100 || o.LockMin != time.Minute || o.LockMax != time.Hour ||
		o.Fingerprints != 8 || o.FingerprintTTL != time.Hour || o.RecheckInterval != 5*time.Minute ||
		o.KnownGoodTTL != 30*24*time.Hour || o.BatchDelay != 100*time.Millisecond || o.MaxEntries != d.MaxEntries {
		t.Fatalf("zero options did not take the defaults: %+v", o)
	}
	for _, bad := range []Options{
		{MaxAccountFailures: 101},
		{BatchDelay: time.Second},
		{IPThreshold: -1},
		{LockMin: 2 * time.Hour},
		{PrefixV4Bits: 33},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	if _, err := Open(t.TempDir()+"/x.db", []byte("short"), Options{}); err == nil {
		t.Error("short key accepted")
	}
}

func TestAccountIPThreshold(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip, other := v4(1, 1, 1), v4(2, 2, 2)
	for i := 1; i <= 9; i++ {
		info := g.Failure("alice", ip, fmt.Sprint("wrong", i))
		if !info.Counted || info.AccountIP != i || info.Locked != ScopeNone {
			t.Fatalf("failure %d: %+v", i, info)
		}
	}
	wantVerdict(t, g.Check("alice", ip, "x"), Allow, 0)
	info := g.Failure("alice", ip, "wrong10")
	if info.Locked != ScopeAccountIP || !info.Until.Equal(base.Add(time.Minute)) {
		t.Fatalf("10th failure: %+v", info)
	}
	v := g.Check("Alice", ip, "right")
	wantVerdict(t, v, Locked, ScopeAccountIP)
	if v.String() != "locked: account+ip" {
		t.Errorf("String %q", v)
	}
	wantVerdict(t, g.Check("alice", other, "right"), Allow, 0)
	wantVerdict(t, g.Check("bob", ip, "right"), Allow, 0)
}

func TestBackoffDoublesAndCaps(t *testing.T) {
	g, clk, _ := testGuard(t, func(o *Options) { o.AccountIPWindow = 24 * time.Hour })
	ip := v4(1, 1, 1)
	fail(g, "alice", ip, "w", 10)
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for i, w := range want {
		v := g.Check("alice", ip, "x")
		wantVerdict(t, v, Locked, ScopeAccountIP)
		got := v.Until.Sub(clk.Now())
		if got != w*time.Minute {
			t.Fatalf("lock %d: %v, want %v", i+1, got, w*time.Minute)
		}
		clk.Add(got - time.Second)
		wantVerdict(t, g.Check("alice", ip, "x"), Locked, ScopeAccountIP)
		clk.Add(time.Second)
		wantVerdict(t, g.Check("alice", ip, "x"), Allow, 0)
		if info := g.Failure("alice", ip, fmt.Sprint("again", i)); info.Locked != ScopeAccountIP {
			t.Fatalf("failure after lock %d did not lock again: %+v", i+1, info)
		}
	}
	// Past LockMemory (and the window), the series starts over.
	clk.Add(49 * time.Hour)
	for i := range 9 {
		if info := g.Failure("alice", ip, fmt.Sprint("later", i)); info.Locked != ScopeNone {
			t.Fatalf("locked after %d failures: %+v", i+1, info)
		}
	}
	if info := g.Failure("alice", ip, "later9"); info.Locked != ScopeAccountIP || info.Until.Sub(clk.Now()) != time.Minute {
		t.Fatalf("new series: %+v", info)
	}
}

func TestWindowSlidesAndExpires(t *testing.T) {
	g, clk, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	fail(g, "alice", ip, "a", 9)
	// Two windows later the old failures are gone.
	clk.Add(30 * time.Minute)
	for i := range 9 {
		if info := g.Failure("alice", ip, fmt.Sprint("b", i)); info.Locked != ScopeNone || info.AccountIP != i+1 {
			t.Fatalf("b%d: %+v", i, info)
		}
	}
	// Half a window further, half of those still count: 4 + 6 = 10.
	clk.Add(15*time.Minute + 7*time.Minute + 30*time.Second)
	for i := range 5 {
		if info := g.Failure("alice", ip, fmt.Sprint("c", i)); info.Locked != ScopeNone || info.AccountIP != 5+i {
			t.Fatalf("c%d: %+v", i, info)
		}
	}
	if info := g.Failure("alice", ip, "c5"); info.Locked != ScopeAccountIP || info.AccountIP != 10 {
		t.Fatalf("c5: %+v", info)
	}
}

func TestStaleSecretCountsOnce(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	asked := 0
	for range 200 {
		v, backend := attempt(g, "alice", ip, "old-password")
		if backend {
			asked++
		} else if v.Outcome != Stale || v.String() != "repeated stale secret" {
			t.Fatalf("verdict %q", v)
		}
	}
	if asked != 1 {
		t.Fatalf("backend asked %d times, want 1", asked)
	}
	// Failure itself also counts a repeated secret once.
	for range 200 {
		if info := g.Failure("alice", ip, "old-password"); info.Counted || info.Consecutive != 1 || info.AccountIP != 1 {
			t.Fatalf("repeat counted: %+v", info)
		}
	}
	// The right password is a different secret: never stale.
	wantVerdict(t, g.Check("alice", ip, "right"), Allow, 0)
	// Fingerprints are per account.
	wantVerdict(t, g.Check("bob", ip, "old-password"), Allow, 0)
}

func TestNineDistinctSecrets(t *testing.T) {
	g, clk, _ := testGuard(t, func(o *Options) { o.AccountIPThreshold = 100 })
	ip := v4(1, 1, 1)
	for i := range 9 {
		clk.Add(time.Second)
		if info := g.Failure("alice", ip, fmt.Sprint("s", i)); !info.Counted || info.Consecutive != i+1 {
			t.Fatalf("s%d: %+v", i, info)
		}
	}
	for i := 1; i < 9; i++ {
		wantVerdict(t, g.Check("alice", ip, fmt.Sprint("s", i)), Stale, 0)
	}
	// s0 was the least recently confirmed: forgotten, so asked and counted again.
	wantVerdict(t, g.Check("alice", ip, "s0"), Allow, 0)
	if info := g.Failure("alice", ip, "s0"); !info.Counted || info.Consecutive != 10 {
		t.Fatalf("s0 again: %+v", info)
	}
	wantVerdict(t, g.Check("alice", ip, "s1"), Allow, 0) // s1 made room for s0
	wantVerdict(t, g.Check("alice", ip, "s0"), Stale, 0)
	if n := len(g.fps["alice"]); n != 8 {
		t.Fatalf("%d fingerprints kept, want 8", n)
	}
}

func TestRecheckInterval(t *testing.T) {
	g, clk, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	g.Failure("alice", ip, "old")
	clk.Add(5*time.Minute - time.Second)
	wantVerdict(t, g.Check("alice", ip, "old"), Stale, 0)
	clk.Add(time.Second)
	v := g.Check("alice", ip, "old")
	if !v.Allowed() || !v.Recheck || v.String() != "allowed: recheck stale secret" {
		t.Fatalf("due recheck: %q %+v", v, v)
	}
	// Only one client gets the recheck.
	wantVerdict(t, g.Check("alice", v4(2, 2, 2), "old"), Stale, 0)
	// Still wrong: refreshed, not counted.
	if info := g.Failure("alice", ip, "old"); info.Counted {
		t.Fatalf("recheck counted: %+v", info)
	}
	// The refresh keeps it alive past the first hour.
	for range 12 {
		clk.Add(5 * time.Minute)
		if v := g.Check("alice", ip, "old"); !v.Recheck {
			t.Fatalf("no recheck at %v: %q", clk.Now().Sub(base), v)
		}
		g.Failure("alice", ip, "old")
	}
	if c := g.counters[ScopeAccount]["alice"]; c.consec != 1 {
		t.Fatalf("consecutive %d, want 1", c.consec)
	}
}

func TestFingerprintExpires(t *testing.T) {
	g, clk, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	g.Failure("alice", ip, "old")
	clk.Add(30 * time.Minute)
	if v := g.Check("alice", ip, "old"); !v.Recheck {
		t.Fatalf("%q", v)
	}
	g.Failure("alice", ip, "old") // confirmed wrong: the hour starts again
	clk.Add(time.Hour - time.Second)
	if v := g.Check("alice", ip, "old"); !v.Recheck {
		t.Fatalf("%q", v)
	}
	// That recheck timed out (no Failure); a second later it has expired.
	clk.Add(time.Second)
	if v := g.Check("alice", ip, "old"); !v.Allowed() || v.Recheck {
		t.Fatalf("expired fingerprint: %q", v)
	}
	if info := g.Failure("alice", ip, "old"); !info.Counted || info.Consecutive != 2 {
		t.Fatalf("after expiry: %+v", info)
	}
}

func TestSuccessClears(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	fail(g, "alice", ip, "w", 10)
	wantVerdict(t, g.Check("alice", ip, "w1"), Locked, ScopeAccountIP)
	g.Success("ALICE", ip) // e.g. an admin cleared it and the user got in elsewhere
	wantVerdict(t, g.Check("alice", ip, "w1"), Allow, 0)
	if c := g.counters[ScopeAccount]["alice"]; c.consec != 0 || c.cur != 10 {
		t.Fatalf("account counter after success: %+v", c)
	}
	if info := g.Failure("alice", ip, "w1"); !info.Counted || info.AccountIP != 1 || info.Consecutive != 1 {
		t.Fatalf("after success: %+v", info)
	}
}

func TestResetAccount(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	g.Failure("alice", ip, "password") // refused while 2FA was on
	wantVerdict(t, g.Check("alice", ip, "password"), Stale, 0)
	g.ResetAccount("Alice") // 2fa disable
	wantVerdict(t, g.Check("alice", ip, "password"), Allow, 0)
}

func TestKnownGoodExemption(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	good, attacker := v4(0, 0, 1), v4(9, 9, 9)
	g.Success("alice", good)
	// 50 distinct wrong passcodes from one IP lock it for the account.
	asked := 0
	for i := range 50 {
		if _, b := attempt(g, "alice", attacker, fmt.Sprintf("PASSCODE%08d", i)); b {
			asked++
		}
	}
	if asked != 10 {
		t.Fatalf("attacker reached the backend %d times, want 10", asked)
	}
	wantVerdict(t, g.Check("alice", attacker, "x"), Locked, ScopeAccountIP)
	wantVerdict(t, g.Check("alice", good, "right"), Allow, 0)
	// A botnet trips the account lock: 40 more from other prefixes.
	for i := range 40 {
		g.Failure("alice", v4(100+i, 0, 1), fmt.Sprint("bot", i))
	}
	wantVerdict(t, g.Check("alice", v4(200, 0, 1), "x"), Locked, ScopeAccount)
	wantVerdict(t, g.Check("alice", good, "right"), Allow, 0)
	// The (account, ip) counter still protects the known-good IP.
	fail(g, "alice", good, "typo", 10)
	wantVerdict(t, g.Check("alice", good, "right"), Locked, ScopeAccountIP)

	// Known-good ends after 30 days.
	g2, clk2, _ := testGuard(t, nil)
	g2.Success("alice", good)
	clk2.Add(30*24*time.Hour + time.Second)
	for i := range 50 {
		g2.Failure("alice", v4(100+i, 0, 1), fmt.Sprint("bot", i))
	}
	wantVerdict(t, g2.Check("alice", good, "right"), Locked, ScopeAccount)
}

func TestSprayingLocksIP(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip := v4(7, 7, 7)
	g.Success("carol", ip) // a real user behind the same NAT
	asked := 0
	for i := range 100 {
		v, b := attempt(g, fmt.Sprintf("user%03d", i), ip, "Spring2026!")
		if b {
			asked++
		} else {
			wantVerdict(t, v, Locked, ScopeIP)
		}
	}
	if asked != 30 {
		t.Fatalf("spray reached the backend %d times, want 30", asked)
	}
	wantVerdict(t, g.Check("nobody", ip, "x"), Locked, ScopeIP)
	wantVerdict(t, g.Check("user000", v4(8, 8, 8), "right"), Allow, 0)
	wantVerdict(t, g.Check("carol", ip, "right"), Allow, 0)
}

func TestPrefixAggregation(t *testing.T) {
	for _, tc := range []struct {
		name            string
		ip              func(i int) string
		inside, outside string
	}{
		{"ipv4", func(i int) string { return v4(1, 2, i).String() }, "::ffff:10.1.2.250", "10.1.3.1"},
		{"ipv6", func(i int) string { return v6(1, 2, i).String() }, "2001:db8:1:2:ffff::1", "2001:db8:1:3::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, _, _ := testGuard(t, nil)
			for i := 1; i <= 100; i++ {
				info := g.Failure(fmt.Sprint("u", i), addr(t, tc.ip(i)), "pw")
				if (info.Locked == ScopePrefix) != (i == 100) || info.Prefix != i {
					t.Fatalf("failure %d: %+v", i, info)
				}
			}
			wantVerdict(t, g.Check("new", addr(t, tc.inside), "x"), Locked, ScopePrefix)
			wantVerdict(t, g.Check("new", addr(t, tc.outside), "x"), Allow, 0)
		})
	}
}

func TestAccountCap(t *testing.T) {
	g, clk, _ := testGuard(t, nil)
	// One failure every 2 minutes from ever new prefixes stays under every
	// windowed threshold; the 100th still locks the account.
	for i := 1; i <= 100; i++ {
		clk.Add(2 * time.Minute)
		v, b := attempt(g, "dave", v4(i, i, 1), fmt.Sprint("guess", i))
		if !b {
			t.Fatalf("attempt %d refused: %q", i, v)
		}
	}
	c := g.counters[ScopeAccount]["dave"]
	if c.consec != 100 || !c.locked(nanos(clk.Now())) {
		t.Fatalf("after 100: %+v", c)
	}
	if est := c.estimate(nanos(clk.Now()), int64(time.Hour)); est >= 50 {
		t.Fatalf("windowed count %d would have locked anyway", est)
	}
	wantVerdict(t, g.Check("dave", v4(200, 1, 1), "x"), Locked, ScopeAccount)
	// After the lock, the next failure locks again, for longer.
	clk.Add(time.Minute)
	if info := g.Failure("dave", v4(201, 1, 1), "x"); info.Locked != ScopeAccount || info.Until.Sub(clk.Now()) != 2*time.Minute {
		t.Fatalf("101st: %+v", info)
	}
	// A success resets the count (the lock itself runs its course).
	g.Success("dave", v4(1, 1, 1))
	clk.Add(2 * time.Minute)
	if info := g.Failure("dave", v4(202, 1, 1), "y"); info.Consecutive != 1 || info.Locked != ScopeNone {
		t.Fatalf("after success: %+v", info)
	}
}

func TestCaseFoldedUsers(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	for i, u := range []string{"alice", "Alice", "ALICE", "aLiCe", "alice", "ALICE", "Alice", "alice", "alice", "ALİCE"} {
		g.Failure(u, ip, fmt.Sprint("w", i))
	}
	// "ALİCE" (dotted capital I) is a different account under EqualFold.
	if n := g.counters[ScopeAccountIP]["alice\x00"+ip.String()].cur; n != 9 {
		t.Fatalf("alice counted %d, want 9", n)
	}
	g.Failure("Alice", ip, "w10")
	wantVerdict(t, g.Check("ALICE", ip, "x"), Locked, ScopeAccountIP)
}

func TestDelay(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for n, w := range want {
		if got := g.Delay(n); got != w {
			t.Errorf("Delay(%d) = %v, want %v", n, got, w)
		}
	}
	if g.Delay(1000) != 8*time.Second {
		t.Error("Delay(1000)")
	}
}

func TestStrings(t *testing.T) {
	for v, want := range map[Verdict]string{
		{Outcome: Allow}:                       "allowed",
		{Outcome: Locked, Scope: ScopeAccount}: "locked: account",
		{Outcome: Locked, Scope: ScopeIP}:      "locked: ip",
		{Outcome: Locked, Scope: ScopePrefix}:  "locked: prefix",
		{Outcome: Stale}:                       "repeated stale secret",
		{Outcome: Unavailable}:                 "lockout unavailable",
	} {
		if v.String() != want {
			t.Errorf("%+v: %q, want %q", v, v, want)
		}
	}
	info := FailureInfo{Counted: true, AccountIP: 10, Locked: ScopeAccountIP, Until: base}
	if s := info.LogValue().String(); !strings.Contains(s, "locked=account+ip") {
		t.Errorf("LogValue %s", s)
	}
}

func TestListAndClear(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	fail(g, "alice", ip, "w", 10)
	for i := range 30 {
		g.Failure(fmt.Sprint("u", i), v4(5, 5, 5), "pw")
	}
	list := g.List()
	if len(list) != 2 || list[0].Scope != ScopeAccountIP || list[0].User != "alice" || list[0].IP != ip ||
		list[1].Scope != ScopeIP || list[1].IP != v4(5, 5, 5) || list[0].Failures != 10 {
		t.Fatalf("List: %v", list)
	}
	if s := list[0].String(); s != "account+ip alice 10.1.1.1 failures=10 until=2026-01-01T00:01:00Z" {
		t.Errorf("Entry.String %q", s)
	}
	if n := g.Clear("10.5.5.5"); n != 31 { // the IP and its 30 (account, ip) counters
		t.Errorf("Clear(ip) removed %d", n)
	}
	if n := g.Clear("ALICE"); n != 3 { // account, account+ip, fingerprints
		t.Errorf("Clear(user) removed %d", n)
	}
	if n := g.Clear("10.1.1.0/24"); n != 2 { // the prefix and the IP 10.1.1.1
		t.Errorf("Clear(prefix) removed %d", n)
	}
	if l := g.List(); len(l) != 0 {
		t.Fatalf("after Clear: %v", l)
	}
	wantVerdict(t, g.Check("alice", ip, "w1"), Allow, 0)
}

func TestConcurrent(t *testing.T) {
	g, clk, _ := testGuard(t, func(o *Options) { o.BatchDelay = time.Millisecond })
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				u, ip := fmt.Sprint("u", i%17), v4(w, i%5, i%3)
				if attempt(g, u, ip, fmt.Sprint("s", i%11)); i%50 == 0 {
					g.Success(u, ip)
					clk.Add(time.Second)
				}
				if i%100 == 0 {
					g.List()
					g.ResetAccount(u)
				}
			}
		})
	}
	wg.Wait()
}
