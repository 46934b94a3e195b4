//go:build unix

package portal_test

// Accounts in PostgreSQL: portal nodes with Options.Accounts on one
// database (a private, real PostgreSQL) read and change the accounts
// there, never in the accounts file; while PostgreSQL is down a change
// gets the "unavailable" page and nothing is written; the database holds
// no secret in clear.

import (
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kanmon-mail/kanmon/accountsdb"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/pgtest"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/portal"
)

// accountsURL is pg's URL with a passfile for its password, as a node's
// accounts setting names it.
func accountsURL(t *testing.T, pg *pgtest.Server) string {
	t.Helper()
	return pg.URL() + "&passfile=" + url.QueryEscape(pg.PassFile(t))
}

// accountsDB connects a portal to the accounts database at u, with a
// connection of its own, as each kanmon node does (accounts =
// "postgres://...").
func accountsDB(t *testing.T, u string) func(*portal.Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := accountsdb.Open(ctx, u, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return func(o *portal.Options) { o.Accounts = auth.OpenSharedStore(d) }
}

// pgCluster starts a PostgreSQL and two portal nodes on it: w's own (A)
// and b. They share the files (state_dir: the pepper and totp.key), not
// their sessions.
func pgCluster(t *testing.T) (pg *pgtest.Server, w *world, b *portal.Server) {
	t.Helper()
	pg = pgtest.Start(t, pgtest.Options{})
	u := accountsURL(t, pg)
	w = newWorld(t, accountsDB(t, u))
	b = w.node(accountsDB(t, u))
	return pg, w, b
}

// pgRows is every row of every table of the database, as PostgreSQL
// writes a row as text (all its columns), a row a line, ordered; tables
// are "table: row". It connects anew (a connection does not survive
// pg.Stop).
func pgRows(t *testing.T, pg *pgtest.Server) string {
	t.Helper()
	ctx := context.Background()
	conn := pg.Conn(t)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, table := range tables {
		rows, err := conn.Query(ctx, "SELECT r::text FROM "+pgx.Identifier{table}.Sanitize()+" r ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			b.WriteString(table + ": " + l + "\n")
		}
	}
	return b.String()
}

// pgHash is the hash column of user's passcode for app, or "" when there
// is none.
func pgHash(t *testing.T, pg *pgtest.Server, user, app string) string {
	t.Helper()
	var hash string
	err := pg.Conn(t).QueryRow(context.Background(), "SELECT hash FROM passcodes WHERE account = $1 AND app = $2", user, app).Scan(&hash)
	if err == pgx.ErrNoRows {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return hash
}

// A passcode made on node A is in the database, hashed with the shared
// pepper, and on node B's list; the one-time code B accepted is spent
// for A; a revoke on B takes it out of the database and off A's list.
// The accounts file is never written.
func TestAccountsDBAcrossNodes(t *testing.T) {
	pg, w, b := pgCluster(t)
	a := w.srv
	file := w.accounts()
	c := w.client(inside).on(a)
	c.signIn("alice", alicePW, "").wantRedirect("/account")
	_, codes := c.enroll()
	grouped := c.follow(c.post("/passcodes/add", form("app", "Thunderbird")).wantRedirect("/passcodes/new")).
		want(http.StatusOK).text("passcode")

	hash := pgHash(t, pg, "alice", "Thunderbird")
	if hash == "" {
		t.Fatalf("no passcode row in the database:\n%s", pgRows(t, pg))
	}
	pepper, err := auth.LoadOrCreatePepper(w.rt.Load().Config.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	code, ok := auth.NormalizePasscode(grouped)
	if !ok || !auth.VerifyPasscode(pepper, hash, code) {
		t.Fatalf("the database's hash %q does not verify the passcode shown", hash)
	}
	if got := w.accounts(); got != file {
		t.Errorf("the accounts file was written:\n%s", got)
	}

	// B reads alice's 2FA from the database: it wants a code, and takes
	// a one-time code made on A.
	d := w.client("10.9.9.9").on(b)
	if got := d.signIn("alice", alicePW, "").want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("no code on B: %q", got)
	}
	d.signIn("alice", alicePW, codes[0]).wantRedirect("/account")
	d.get("/account").want(http.StatusOK, `<tr data-app="Thunderbird">`, "Never")
	if got := w.client("10.9.9.10").on(a).signIn("alice", alicePW, codes[0]).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("the one-time code spent on B, again on A: %q", got)
	}

	// Revoked on B: gone from the database and from A's list.
	d.post("/passcodes/delete", form("app", "Thunderbird")).wantRedirect("/account")
	if got := d.get("/account").lacks(`data-app="Thunderbird"`).text("notice"); !strings.Contains(got, "Thunderbird was deleted") {
		t.Errorf("notice on B: %q", got)
	}
	if h := pgHash(t, pg, "alice", "Thunderbird"); h != "" {
		t.Errorf("the revoked passcode is still in the database: %q", h)
	}
	c.get("/account").want(http.StatusOK, `id="passcodes"`).lacks(`data-app="Thunderbird"`)
	if got := w.accounts(); got != file {
		t.Errorf("the accounts file was written:\n%s", got)
	}
	w.wantLog("passcode added", "passcode deleted")
}

// PostgreSQL stopped: a signed-in user's add and delete of a passcode,
// and the other pages that read the account, get the "unavailable" page
// (503; never a 500, a panic or a misleading message), the session
// lives on, and nothing is written, to the database or the accounts
// file. Once PostgreSQL is back, the same changes go through on the same
// portal, without a restart.
func TestAccountsDBDown(t *testing.T) {
	pg, w, _ := pgCluster(t)
	c := w.client(inside)
	c.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, _ := c.enroll()
	c.follow(c.post("/passcodes/add", form("app", "Thunderbird")).wantRedirect("/passcodes/new")).want(http.StatusOK)
	c.get("/account").want(http.StatusOK, `<tr data-app="Thunderbird">`)
	before, file, reloads := pgRows(t, pg), w.accounts(), w.reloads.Load()
	pg.Stop(t)

	const unavailable = "Temporarily unavailable"
	c.post("/passcodes/add", form("app", "iPhone")).want(http.StatusServiceUnavailable, unavailable)
	c.post("/passcodes/delete", form("app", "Thunderbird")).want(http.StatusServiceUnavailable, unavailable).lacks("no longer exists")
	c.get("/account").want(http.StatusServiceUnavailable, unavailable)
	c.post("/2fa/start", nil).want(http.StatusServiceUnavailable, unavailable)
	c.post("/2fa/disable", form("code", otp.Code(secret, w.now()))).want(http.StatusServiceUnavailable, unavailable)
	if c.session() == "" {
		t.Fatal("the session cookie went with the database")
	}
	checks := w.checks.Load()
	w.client("10.9.9.9").signIn("alice", alicePW, "").want(http.StatusServiceUnavailable, unavailable).lacks(failedText)
	if got := w.checks.Load(); got != checks {
		t.Errorf("the backend was asked %d times with the accounts unreadable", got-checks)
	}
	if n := w.reloads.Load(); n != reloads {
		t.Errorf("%d reloads after refused changes", n-reloads)
	}
	if got := w.accounts(); got != file {
		t.Errorf("the accounts file was written with PostgreSQL down:\n%s", got)
	}
	// The log names the database, not the accounts file.
	w.wantLog(`msg="reading the accounts" proto=portal accounts="postgres kanmon@`, "accounts database unavailable")
	if strings.Contains(w.logs.String(), "panic") {
		t.Errorf("log:\n%s", w.logs.String())
	}

	pg.Start(t)
	if after := pgRows(t, pg); after != before {
		t.Fatalf("the database changed while it was down:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The portal's connections died with the server; its pool connects
	// anew. The same add, retried until it goes through.
	untilUp := func(what string, do func() *response) *response {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			r := do()
			if r.status != http.StatusServiceUnavailable {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still unavailable 20 s after PostgreSQL came back", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	add := untilUp("add", func() *response { return c.post("/passcodes/add", form("app", "iPhone")) })
	c.follow(add.wantRedirect("/passcodes/new")).want(http.StatusOK, "App passcode for iPhone")
	untilUp("delete", func() *response { return c.post("/passcodes/delete", form("app", "Thunderbird")) }).wantRedirect("/account")
	c.get("/account").want(http.StatusOK, `<tr data-app="iPhone">`).lacks(`data-app="Thunderbird"`)
	if pgHash(t, pg, "alice", "iPhone") == "" || pgHash(t, pg, "alice", "Thunderbird") != "" {
		t.Errorf("after PostgreSQL came back:\n%s", pgRows(t, pg))
	}
	if got := w.accounts(); got != file {
		t.Errorf("the accounts file was written:\n%s", got)
	}
}

// secretFragments are the pieces of s that must appear nowhere: s as
// is, and every run of 8 characters of s without its spaces and hyphens
// (all of it, when shorter), so that a secret is found however it was
// grouped or cut.
func secretFragments(s string) []string {
	bare := strings.NewReplacer(" ", "", "-", "").Replace(s)
	out := []string{s}
	if len(bare) < 8 {
		return append(out, bare)
	}
	for i := 0; i+8 <= len(bare); i++ {
		out = append(out, bare[i:i+8])
	}
	return out
}

// The database holds no secret in clear: with 2FA on and a new passcode,
// no row of any table (every column, as text) holds the passcode, the
// one-time codes, the TOTP key in any usual encoding, or the password,
// nor 8 characters in a row of any of them.
func TestAccountsDBNoSecretInClear(t *testing.T) {
	pg, w, _ := pgCluster(t)
	c := w.client(inside)
	c.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, codes := c.enroll()
	grouped := c.follow(c.post("/passcodes/add", form("app", "Thunderbird")).wantRedirect("/passcodes/new")).
		want(http.StatusOK).text("passcode")
	if len(strings.ReplaceAll(grouped, " ", "")) != 16 || len(codes) != auth.OneTimeCodeCount {
		t.Fatalf("passcode %q, %d one-time codes", grouped, len(codes))
	}

	dump := pgRows(t, pg)
	for _, table := range []string{"accounts", "passcodes", "one_time_codes"} {
		if !strings.Contains(dump, table+": ") {
			t.Errorf("no row in %s:\n%s", table, dump)
		}
	}
	secrets := []string{grouped, alicePW, otp.FormatKey(secret),
		base32.StdEncoding.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret),
		base64.RawURLEncoding.EncodeToString(secret), hex.EncodeToString(secret)}
	secrets = append(secrets, codes...)
	lower := strings.ToLower(dump)
	bare := strings.NewReplacer(" ", "", "-", "").Replace(lower) // a secret written grouped
	for _, s := range secrets {
		for _, f := range secretFragments(s) {
			if f = strings.ToLower(f); strings.Contains(lower, f) || strings.Contains(bare, f) {
				t.Errorf("the database holds the secret %q (of %q)", f, s)
			}
		}
	}
}
