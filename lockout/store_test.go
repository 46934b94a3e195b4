package lockout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// storm leaves alice locked at 10.1.1.1 (account+ip) with a remembered
// wrong secret "old", and the spraying IP 10.5.5.5 locked, at which bob is
// known-good.
func storm(g *Guard) {
	g.Success("bob", v4(5, 5, 5))
	fail(g, "alice", v4(1, 1, 1), "w", 9)
	g.Failure("alice", v4(1, 1, 1), "old")
	for i := range 30 {
		g.Failure(fmt.Sprint("u", i), v4(5, 5, 5), "pw")
	}
}

// wantStormState checks what storm left, in a Guard opened later.
func wantStormState(t *testing.T, g *Guard, clk *clock) {
	t.Helper()
	ip := v4(1, 1, 1)
	v := g.Check("alice", ip, "right")
	wantVerdict(t, v, Locked, ScopeAccountIP)
	if !v.Until.Equal(base.Add(time.Minute)) {
		t.Errorf("lock until %v, want %v", v.Until, base.Add(time.Minute))
	}
	wantVerdict(t, g.Check("alice", v4(2, 2, 2), "old"), Stale, 0)
	wantVerdict(t, g.Check("zed", v4(5, 5, 5), "pw"), Locked, ScopeIP)
	wantVerdict(t, g.Check("bob", v4(5, 5, 5), "pw"), Allow, 0)
	// The counts survived too: after the lock, one more failure locks
	// again for twice as long.
	clk.Add(time.Minute)
	if info := g.Failure("alice", ip, "again"); info.Locked != ScopeAccountIP || info.Until.Sub(clk.Now()) != 2*time.Minute {
		t.Errorf("failure after restart: %+v", info)
	}
}

func TestPersistAcrossCloseOpen(t *testing.T) {
	g, clk, path := testGuard(t, nil)
	storm(g)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, g.Check("alice", v4(1, 1, 1), "x"), Unavailable, 0)
	g2 := openGuard(t, path, clk, nil)
	wantStormState(t, g2, clk)
}

func TestPersistAcrossCrash(t *testing.T) {
	g, clk, path := testGuard(t, func(o *Options) { o.BatchDelay = 20 * time.Millisecond })
	storm(g)
	// kill -9: no Close. Copy the file once the batch window has passed.
	time.Sleep(200 * time.Millisecond)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(t.TempDir(), "kanmon.db")
	if err := os.WriteFile(crashed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	g2 := openGuard(t, crashed, clk, nil)
	wantStormState(t, g2, clk)
}

func TestOpenDropsExpired(t *testing.T) {
	g, clk, path := testGuard(t, nil)
	storm(g)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Add(31 * 24 * time.Hour)
	g2 := openGuard(t, path, clk, nil)
	if n := len(g2.counters[ScopeAccountIP]) + len(g2.counters[ScopeAccount]) + len(g2.fps) + len(g2.good); n != 0 {
		t.Errorf("%d expired entries loaded", n)
	}
	if err := g2.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countRecords(t, path); n != 0 {
		t.Errorf("%d expired records left in the database", n)
	}
}

// countRecords counts the records of every state bucket in the database at
// path (which must not be open).
func countRecords(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	db.View(func(tx *bolt.Tx) error {
		for _, name := range bucketNames {
			n += tx.Bucket(name).Stats().KeyN
		}
		return nil
	})
	return n
}

func TestFailClosed(t *testing.T) {
	g, _, _ := testGuard(t, func(o *Options) { o.BatchDelay = 5 * time.Millisecond })
	ip := v4(1, 1, 1)
	wantVerdict(t, g.Check("alice", ip, "x"), Allow, 0)
	g.db.Close() // the database fails underneath
	g.Failure("alice", ip, "w")
	deadline := time.Now().Add(5 * time.Second)
	var v Verdict
	for v = g.Check("alice", ip, "x"); v.Outcome != Unavailable && time.Now().Before(deadline); v = g.Check("alice", ip, "x") {
		time.Sleep(5 * time.Millisecond)
	}
	wantVerdict(t, v, Unavailable, 0)
	if !errors.Is(v.Err, bolt.ErrDatabaseNotOpen) {
		t.Errorf("Err = %v", v.Err)
	}
	if err := g.Close(); err == nil {
		t.Error("Close reported no error for the lost writes")
	}
	v = g.Check("alice", ip, "x")
	if v.Outcome != Unavailable || !errors.Is(v.Err, ErrClosed) {
		t.Errorf("after Close: %+v", v)
	}
}

func TestRecoversAfterWriteError(t *testing.T) {
	g, _, _ := testGuard(t, nil)
	ip := v4(1, 1, 1)
	g.setStoreErr(errors.New("disk full"))
	wantVerdict(t, g.Check("alice", ip, "x"), Unavailable, 0)
	if err := g.flush(); err != nil { // a later write succeeds
		t.Fatal(err)
	}
	wantVerdict(t, g.Check("alice", ip, "x"), Allow, 0)
}

func TestBoundedTables(t *testing.T) {
	g, clk, path := testGuard(t, func(o *Options) { o.MaxEntries = 8 })
	for i := range 200 {
		clk.Add(time.Millisecond)
		ip := v4(i, i%7, 1)
		g.Failure(fmt.Sprint("u", i), ip, "pw")
		g.Success(fmt.Sprint("s", i), ip)
	}
	for s := ScopeAccountIP; s < numScopes; s++ {
		if n := len(g.counters[s]); n > 8 {
			t.Errorf("scope %v holds %d entries", s, n)
		}
	}
	if len(g.fps) > 8 || len(g.good) > 8 {
		t.Errorf("fingerprints %d, known-good %d", len(g.fps), len(g.good))
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countRecords(t, path); n > 6*8 {
		t.Errorf("%d records in the database", n)
	}
}

func TestSweep(t *testing.T) {
	g, clk, path := testGuard(t, nil)
	storm(g)
	g.Failure("erin", v4(3, 3, 3), "w")
	if err := g.flush(); err != nil {
		t.Fatal(err)
	}
	clk.Add(31 * 24 * time.Hour)
	g.Failure("erin", v4(3, 3, 3), "w2") // still fresh after the sweep
	g.sweep()
	if err := g.flush(); err != nil {
		t.Fatal(err)
	}
	if len(g.counters[ScopeAccountIP]) != 1 || len(g.fps) != 1 || len(g.good) != 0 {
		t.Errorf("after sweep: %d account+ip, %d fingerprints, %d known-good",
			len(g.counters[ScopeAccountIP]), len(g.fps), len(g.good))
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countRecords(t, path); n != 5 { // erin's four counters and fingerprints
		t.Errorf("%d records in the database, want 5", n)
	}
}

func TestSecondOpenFails(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the file lock")
	}
	_, _, path := testGuard(t, nil)
	if _, err := Open(path, testKey, Options{}); err == nil {
		t.Fatal("second Open of a locked database succeeded")
	}
}
