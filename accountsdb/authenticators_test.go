//go:build unix

package accountsdb_test

import (
	"context"
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kanmon-mail/kanmon/accountsdb"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/pgtest"
	"github.com/kanmon-mail/kanmon/otp"
)

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
