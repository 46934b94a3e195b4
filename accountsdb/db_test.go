//go:build unix

package accountsdb_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/accountsdb"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/pgtest"
	"github.com/kanmon-mail/kanmon/otp"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// dbURL is the server's URL with a passfile for its password.
func dbURL(t testing.TB, pg *pgtest.Server) string {
	return pg.URL() + "&passfile=" + url.QueryEscape(pg.PassFile(t))
}

// open connects one "node" to pg.
func open(t testing.TB, url string) *accountsdb.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := accountsdb.Open(ctx, url, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// Nodes starting at once create the schema once, without racing.
func TestMigrationsRaceFree(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	u := dbURL(t, pg)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := accountsdb.Open(context.Background(), u, quiet)
			if err == nil {
				d.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: %v", i+1, err)
		}
	}
}

// The commands' rules hold on the database as on the file: 2FA on, a
// passcode added and revoked; the accounts read back as written, and the
// generation counts the changes.
func TestStoreRoundTrip(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	d := open(t, dbURL(t, pg))
	store := auth.OpenSharedStore(d)
	state := t.TempDir()
	if _, err := auth.EnableTwoFA(store, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.EnableTwoFA(store, "bob"); err != nil {
		t.Fatal(err)
	}
	code, err := auth.AddScopedPasscode(store, state, "alice", "Thunderbird", []string{"imap"})
	if err != nil || len(code) != 16 {
		t.Fatalf("AddPasscode: %q %v", code, err)
	}
	if _, err := auth.AddPasscode(store, state, "bob", "Outlook"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.RevokePasscode(store, "bob", "Outlook"); err != nil {
		t.Fatal(err)
	}
	a, g, err := d.LoadGeneration(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g != 5 {
		t.Errorf("generation %d after 5 changes", g)
	}
	if len(a.Accounts) != 2 || a.Accounts[0].User != "alice" || a.Accounts[1].User != "bob" {
		t.Fatalf("accounts %+v", a.Accounts)
	}
	alice := a.Lookup("ALICE")
	if len(alice.Passcodes) != 1 || alice.Passcodes[0].App != "Thunderbird" || len(alice.Passcodes[0].Protocols) != 1 {
		t.Fatalf("alice's passcodes %+v", alice.Passcodes)
	}
	if len(a.Lookup("bob").Passcodes) != 0 {
		t.Fatalf("bob's revoked passcode is still there")
	}
	// The passcode verifies against the stored hash, with the pepper.
	pepper, err := auth.LoadOrCreatePepper(state)
	if err != nil {
		t.Fatal(err)
	}
	if !auth.VerifyPasscode(pepper, alice.Passcodes[0].Hash, code) {
		t.Fatal("the stored hash does not verify the passcode")
	}
	// A change that changes nothing writes nothing.
	if err := store.Update(func(*auth.Accounts) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if g2, _ := d.Generation(context.Background()); g2 != g {
		t.Errorf("an empty change moved the generation %d → %d", g, g2)
	}
}

// A one-time code raced from two nodes is spent exactly once.
func TestOneTimeCodeRace(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	u := dbURL(t, pg)
	nodes := []*auth.Store{auth.OpenSharedStore(open(t, u)), auth.OpenSharedStore(open(t, u))}
	state := t.TempDir() // the nodes share the pepper and totp.key
	if _, err := auth.EnableTwoFA(nodes[0], "carol"); err != nil {
		t.Fatal(err)
	}
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	codes, err := auth.EnrollTOTP(nodes[0], state, "carol", secret)
	if err != nil || len(codes) == 0 {
		t.Fatalf("EnrollTOTP: %v %v", codes, err)
	}
	for round := range 5 {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, ok, err := auth.CheckSecondFactor(nodes[i%2], state, "carol", codes[round], time.Now(), &otp.ReplayGuard{})
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("code %d: %d successes from 8 racing attempts on 2 nodes, want 1", round+1, n)
		}
	}
}

// The key check values: the first node records its own, and a node with
// another pepper is refused with a message that says what to copy.
func TestKeysMustMatch(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	d := open(t, dbURL(t, pg))
	ctx := context.Background()
	first, err := auth.KeyCheckValues(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckKeys(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckKeys(ctx, first); err != nil {
		t.Fatalf("the same keys again: %v", err)
	}
	other, err := auth.KeyCheckValues(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	err = d.CheckKeys(ctx, other)
	if err == nil {
		t.Fatal("a node with other keys was accepted")
	}
	t.Logf("refused: %v", err)
}

// A change on one node reaches another node's watcher at once; a change
// whose notification was lost (made here by SQL with no NOTIFY) is caught
// up by the generation check; PostgreSQL stopped and started: changes are
// refused meanwhile, and the watcher reconciles without a restart.
func TestWatcher(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	u := dbURL(t, pg)
	a, b := open(t, u), open(t, u)
	snap, g, err := a.LoadGeneration(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	applied := make(chan *auth.Accounts, 16)
	w := a.Watch(snap, g, func(x *auth.Accounts, _ int64) { applied <- x })
	defer w.Close()
	wait := func(what string, within time.Duration, want func(*auth.Accounts) bool) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(within)
		for {
			select {
			case x := <-applied:
				if want(x) {
					return time.Since(start)
				}
			case <-deadline:
				t.Fatalf("%s: not applied within %v", what, within)
			}
		}
	}
	store := auth.OpenSharedStore(b)
	if _, err := auth.EnableTwoFA(store, "dave"); err != nil {
		t.Fatal(err)
	}
	took := wait("a change on node b", time.Second, func(x *auth.Accounts) bool { return x.Lookup("dave") != nil })
	t.Logf("node b's change applied on node a after %v", took)

	conn := pg.Conn(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "BEGIN; DELETE FROM accounts WHERE name = 'dave'; UPDATE kanmon_meta SET generation = generation + 1; COMMIT"); err != nil {
		t.Fatal(err)
	}
	took = wait("a change with no notification", 10*time.Second, func(x *auth.Accounts) bool { return x.Lookup("dave") == nil })
	t.Logf("the unnotified change was reconciled after %v", took)

	pg.Stop(t)
	if _, err := auth.EnableTwoFA(store, "erin"); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("a change with PostgreSQL stopped: %v, want ErrUnavailable", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.Up() {
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not notice PostgreSQL stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	pg.Start(t)
	deadline = time.Now().Add(20 * time.Second)
	for {
		_, err := auth.EnableTwoFA(store, "erin")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("changes still refused after PostgreSQL came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wait("a change after the restart", 15*time.Second, func(x *auth.Accounts) bool { return x.Lookup("erin") != nil })
	if !w.Up() {
		t.Error("the watcher is not up after reconciling")
	}
}
