//go:build unix

package accountsdb_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// sealed returns a well-formed sealed TOTP secret, different for each
// seed (one that does not open: the database stores them as they come).
func sealed(seed byte) string {
	nonce := make([]byte, 12)
	ct := make([]byte, 16+otp.SecretSize)
	nonce[0], ct[0] = seed, seed
	enc := base64.RawURLEncoding
	return "aes-256-gcm$" + enc.EncodeToString(nonce) + "$" + enc.EncodeToString(ct)
}

// t0 is a time the authenticators of the tests were added at.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// checkAuthenticators fails unless acct has exactly want, in order, as
// the normalized form: no legacy TOTP.
func checkAuthenticators(t *testing.T, what string, acct *auth.Account, want ...auth.Authenticator) {
	t.Helper()
	if acct == nil {
		t.Fatalf("%s: no account", what)
	}
	if acct.TOTP != "" || !acct.TOTPEnrolled.IsZero() {
		t.Errorf("%s: not normalized: legacy totp %q %v", what, acct.TOTP, acct.TOTPEnrolled)
	}
	got := acct.Authenticators
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Name == want[i].Name && got[i].TOTP == want[i].TOTP && got[i].Added.Equal(want[i].Added)
	}
	if !ok {
		t.Fatalf("%s: authenticators\n%+v\nwant\n%+v", what, got, want)
	}
}

// checkMirror fails unless user's accounts.totp and totp_enrolled, what
// older nodes read, are totp and enrolled (nil for NULL).
func checkMirror(t *testing.T, conn *pgx.Conn, user, totp string, enrolled *time.Time) {
	t.Helper()
	var have string
	var at *time.Time
	if err := conn.QueryRow(context.Background(), "SELECT totp, totp_enrolled FROM accounts WHERE name = $1", user).Scan(&have, &at); err != nil {
		t.Fatal(err)
	}
	if have != totp || (at == nil) != (enrolled == nil) || (at != nil && !at.Equal(*enrolled)) {
		t.Fatalf("%s's mirror: totp %q enrolled %v, want %q %v", user, have, at, totp, enrolled)
	}
}

// countRows returns how many rows of table have account = user.
func countRows(t *testing.T, conn *pgx.Conn, table, user string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE account = $1", user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// change runs fn on user's account (added if missing) in d.Update, with
// the accounts' validation, and returns the generation after it.
func change(t *testing.T, d *accountsdb.DB, user string, fn func(*auth.Account)) int64 {
	t.Helper()
	err := d.Update(func(a *auth.Accounts) error {
		acct := a.Lookup(user)
		if acct == nil {
			a.Accounts = append(a.Accounts, auth.Account{User: user, Enabled: t0})
			acct = &a.Accounts[len(a.Accounts)-1]
		}
		fn(acct)
		return nil
	}, func(a *auth.Accounts) error { return a.Validate("test") })
	if err != nil {
		t.Fatal(err)
	}
	g, err := d.Generation(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// notified waits for the NOTIFY of generation g on conn, which LISTENs.
func notified(t *testing.T, conn *pgx.Conn, g int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("no notification of generation %d: %v", g, err)
	}
	if n.Channel != accountsdb.NotifyChannel || n.Payload != strconv.FormatInt(g, 10) {
		t.Fatalf("notification %s %q, want %s %d", n.Channel, n.Payload, accountsdb.NotifyChannel, g)
	}
}

// An account's authenticators read back as written, in order; removing
// one is a change (generation, NOTIFY); accounts.totp and totp_enrolled
// mirror the first, for the nodes of the version before them.
func TestAuthenticators(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	d := open(t, dbURL(t, pg))
	ctx := context.Background()
	conn := pg.Conn(t)
	if _, err := conn.Exec(ctx, "LISTEN "+accountsdb.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	iphone := auth.Authenticator{Name: "iPhone", TOTP: sealed(1), Added: t0}
	spare := auth.Authenticator{Name: "Spare", TOTP: sealed(2), Added: t0.Add(time.Hour)}
	desktop := auth.Authenticator{Name: "Desktop", TOTP: sealed(3), Added: t0.Add(2 * time.Hour)}

	g := change(t, d, "alice", func(acct *auth.Account) {
		acct.Authenticators = []auth.Authenticator{iphone, spare, desktop}
	})
	notified(t, conn, g)
	a, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	checkAuthenticators(t, "written", a.Lookup("alice"), iphone, spare, desktop)
	checkMirror(t, conn, "alice", iphone.TOTP, &iphone.Added)
	if n := countRows(t, conn, "authenticators", "alice"); n != 3 {
		t.Errorf("%d rows in authenticators, want 3", n)
	}

	// A change that changes nothing writes nothing.
	if g2 := change(t, d, "alice", func(*auth.Account) {}); g2 != g {
		t.Errorf("an empty change moved the generation %d → %d", g, g2)
	}

	// Removing the first: the mirror is the new first.
	g2 := change(t, d, "alice", func(acct *auth.Account) {
		acct.Authenticators = acct.Authenticators[1:]
	})
	if g2 != g+1 {
		t.Errorf("removing an authenticator: generation %d → %d", g, g2)
	}
	notified(t, conn, g2)
	a, err = d.Load()
	if err != nil {
		t.Fatal(err)
	}
	checkAuthenticators(t, "one removed", a.Lookup("alice"), spare, desktop)
	checkMirror(t, conn, "alice", spare.TOTP, &spare.Added)

	// Removing one in the middle, and adding one.
	laptop := auth.Authenticator{Name: "Laptop", TOTP: sealed(4), Added: t0.Add(3 * time.Hour)}
	g3 := change(t, d, "alice", func(acct *auth.Account) {
		acct.Authenticators = []auth.Authenticator{spare, laptop}
	})
	notified(t, conn, g3)
	a, _ = d.Load()
	checkAuthenticators(t, "one replaced", a.Lookup("alice"), spare, laptop)

	// None left (an account whose 2FA the admin turned on): an empty
	// mirror.
	g4 := change(t, d, "alice", func(acct *auth.Account) { acct.Authenticators = nil })
	notified(t, conn, g4)
	a, _ = d.Load()
	checkAuthenticators(t, "none", a.Lookup("alice"))
	checkMirror(t, conn, "alice", "", nil)
	if n := countRows(t, conn, "authenticators", "alice"); n != 0 {
		t.Errorf("%d rows in authenticators, want 0", n)
	}

	// An account deleted takes its authenticators with it.
	change(t, d, "alice", func(acct *auth.Account) { acct.Authenticators = []auth.Authenticator{iphone} })
	if err := d.Update(func(a *auth.Accounts) error {
		a.Accounts = nil
		return nil
	}, func(*auth.Accounts) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, conn, "authenticators", "alice"); n != 0 {
		t.Errorf("%d rows in authenticators of a deleted account, want 0", n)
	}
}

// auth's commands on the database: enroll, add, remove.
func TestAuthenticatorCommands(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	d := open(t, dbURL(t, pg))
	store := auth.OpenSharedStore(d)
	state := t.TempDir()
	for i, name := range []string{"iPhone", "iPad", "Desktop"} {
		secret, err := otp.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			_, err = auth.EnrollAuthenticator(store, state, "bob", name, secret)
		} else {
			err = auth.AddAuthenticator(store, state, "bob", name, secret)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	a, err := store.Read()
	if err != nil {
		t.Fatal(err)
	}
	bob := a.Lookup("bob")
	if bob.TOTP != "" || len(bob.Authenticators) != 3 || bob.Authenticators[0].Name != "iPhone" ||
		bob.Authenticators[1].Name != "iPad" || bob.Authenticators[2].Name != "Desktop" {
		t.Fatalf("bob: %+v", bob)
	}
	g, _ := d.Generation(context.Background())
	if removed, err := auth.RemoveAuthenticator(store, "bob", "ipad"); err != nil || removed != "iPad" {
		t.Fatalf("RemoveAuthenticator: %q %v", removed, err)
	}
	if g2, _ := d.Generation(context.Background()); g2 != g+1 {
		t.Errorf("removing an authenticator: generation %d → %d", g, g2)
	}
	a, err = store.Read()
	if err != nil {
		t.Fatal(err)
	}
	checkAuthenticators(t, "after removing iPad", a.Lookup("bob"), bob.Authenticators[0], bob.Authenticators[2])
}

// A database of the first schema, whose accounts hold their
// authenticator in accounts.totp, reads after the upgrade with it as the
// one authenticator named auth.LegacyAuthenticatorName.
func TestAuthenticatorsMigrated(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	u := dbURL(t, pg)
	ctx := context.Background()
	if err := accountsdb.MigrateUpTo(ctx, u, 1); err != nil {
		t.Fatal(err)
	}
	conn := pg.Conn(t)
	enrolled := t0.Add(time.Minute)
	if _, err := conn.Exec(ctx, `INSERT INTO accounts (name, position, enabled, totp, totp_enrolled, generation)
		VALUES ('carol', 0, $1, $2, $3, 1), ('dave', 1, $1, '', NULL, 1)`, t0, sealed(7), enrolled); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "UPDATE kanmon_meta SET generation = 1"); err != nil {
		t.Fatal(err)
	}
	d := open(t, u)
	a, g, err := d.LoadGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g != 1 {
		t.Errorf("generation %d after the upgrade, want 1", g)
	}
	legacy := auth.Authenticator{Name: auth.LegacyAuthenticatorName, TOTP: sealed(7), Added: enrolled}
	checkAuthenticators(t, "carol", a.Lookup("carol"), legacy)
	checkAuthenticators(t, "dave", a.Lookup("dave"))
	if n := countRows(t, conn, "authenticators", "carol"); n != 1 {
		t.Errorf("the migration wrote %d rows for carol, want 1", n)
	}
	if n := countRows(t, conn, "authenticators", "dave"); n != 0 {
		t.Errorf("the migration wrote %d rows for dave, want 0", n)
	}
	if err := a.Validate("migrated"); err != nil {
		t.Errorf("the migrated accounts do not validate: %v", err)
	}
	// Another authenticator for carol: the first stays the mirror.
	phone := auth.Authenticator{Name: "Phone", TOTP: sealed(8), Added: t0.Add(time.Hour)}
	change(t, d, "carol", func(acct *auth.Account) { acct.Authenticators = append(acct.Authenticators, phone) })
	a, _ = d.Load()
	checkAuthenticators(t, "carol with two", a.Lookup("carol"), legacy, phone)
	checkMirror(t, conn, "carol", legacy.TOTP, &legacy.Added)
	// The same in the legacy form is no change.
	g, _ = d.Generation(ctx)
	if g2 := change(t, d, "carol", func(acct *auth.Account) {
		acct.TOTP, acct.TOTPEnrolled = legacy.TOTP, legacy.Added
		acct.Authenticators = []auth.Authenticator{phone}
	}); g2 != g {
		t.Errorf("the same authenticators, the first in the legacy form, moved the generation %d → %d", g, g2)
	}
}

// oldNodeWrite writes user's accounts row as a node of the version
// before the authenticators table does (that version's queueAccount):
// delete and insert in one transaction, with totp and enrolled as the
// account's only authenticator, then the generation and its NOTIFY.
// remove deletes the account instead.
func oldNodeWrite(t *testing.T, conn *pgx.Conn, user, totp string, enrolled *time.Time, remove bool) {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var g int64
	if err := tx.QueryRow(ctx, "SELECT generation FROM kanmon_meta WHERE id = 1 FOR UPDATE").Scan(&g); err != nil {
		t.Fatal(err)
	}
	g++
	var pos int64
	if err := tx.QueryRow(ctx, "SELECT COALESCE((SELECT position FROM accounts WHERE name = $1), (SELECT COALESCE(max(position) + 1, 0) FROM accounts))", user).Scan(&pos); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM accounts WHERE name = $1", user); err != nil {
		t.Fatal(err)
	}
	if !remove {
		if _, err := tx.Exec(ctx, "INSERT INTO accounts (name, position, enabled, totp, totp_enrolled, generation) VALUES ($1, $2, $3, $4, $5, $6)",
			user, pos, t0, totp, enrolled, g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE kanmon_meta SET generation = $1 WHERE id = 1", g); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", accountsdb.NotifyChannel, strconv.FormatInt(g, 10)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the old node's write: %v", err)
	}
}

// A rolling upgrade: nodes of the version before the authenticators
// table write accounts.totp alone, beside the new nodes.
func TestAuthenticatorsOldNodes(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	d := open(t, dbURL(t, pg))
	conn := pg.Conn(t)
	load := func() *auth.Accounts {
		t.Helper()
		a, err := d.Load()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	// An old node enrolls frank: a legacy authenticator.
	enrolled := t0.Add(time.Minute)
	oldNodeWrite(t, conn, "frank", sealed(5), &enrolled, false)
	legacy := auth.Authenticator{Name: auth.LegacyAuthenticatorName, TOTP: sealed(5), Added: enrolled}
	checkAuthenticators(t, "enrolled by an old node", load().Lookup("frank"), legacy)
	// A new node adds one: both are rows now, the legacy one first.
	tablet := auth.Authenticator{Name: "Tablet", TOTP: sealed(6), Added: t0.Add(time.Hour)}
	change(t, d, "frank", func(acct *auth.Account) { acct.Authenticators = append(acct.Authenticators, tablet) })
	checkAuthenticators(t, "one added by a new node", load().Lookup("frank"), legacy, tablet)
	if n := countRows(t, conn, "authenticators", "frank"); n != 2 {
		t.Errorf("%d rows for frank, want 2", n)
	}

	// erin has two authenticators, written by a new node.
	iphone := auth.Authenticator{Name: "iPhone", TOTP: sealed(1), Added: t0}
	spare := auth.Authenticator{Name: "Spare", TOTP: sealed(2), Added: t0.Add(time.Hour)}
	change(t, d, "erin", func(acct *auth.Account) { acct.Authenticators = []auth.Authenticator{iphone, spare} })
	// An old node rewrites her account (a passcode added, a one-time
	// code spent): it writes back the mirror it read, and she keeps both.
	oldNodeWrite(t, conn, "erin", iphone.TOTP, &iphone.Added, false)
	checkAuthenticators(t, "rewritten by an old node", load().Lookup("erin"), iphone, spare)
	// An old node replaces her authenticator (an import): the rows no
	// longer match the mirror, and the mirror is her authenticator.
	oldNodeWrite(t, conn, "erin", sealed(9), &enrolled, false)
	replaced := auth.Authenticator{Name: auth.LegacyAuthenticatorName, TOTP: sealed(9), Added: enrolled}
	checkAuthenticators(t, "replaced by an old node", load().Lookup("erin"), replaced)
	// A new node's change to her account replaces the stale rows.
	change(t, d, "erin", func(acct *auth.Account) { acct.Authenticators = append(acct.Authenticators, spare) })
	checkAuthenticators(t, "then changed by a new node", load().Lookup("erin"), replaced, spare)
	checkMirror(t, conn, "erin", replaced.TOTP, &replaced.Added)
	// An old node turns her 2FA off: her authenticators go with her
	// account, at commit.
	oldNodeWrite(t, conn, "erin", "", nil, true)
	if n := countRows(t, conn, "authenticators", "erin"); n != 0 {
		t.Errorf("%d rows for erin after an old node deleted her account, want 0", n)
	}
	if load().Lookup("erin") != nil {
		t.Error("erin is still there")
	}
	// And enrolls her again, without rows: a legacy authenticator, not
	// the old ones.
	oldNodeWrite(t, conn, "erin", sealed(10), &enrolled, false)
	again := auth.Authenticator{Name: auth.LegacyAuthenticatorName, TOTP: sealed(10), Added: enrolled}
	checkAuthenticators(t, "enrolled again by an old node", load().Lookup("erin"), again)
	// An old node's admin turns 2FA on for grace, with no authenticator.
	oldNodeWrite(t, conn, "grace", "", nil, false)
	checkAuthenticators(t, "no authenticator, from an old node", load().Lookup("grace"))
}
