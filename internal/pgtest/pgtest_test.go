//go:build unix

package pgtest

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/kanmon-mail/kanmon/internal/testenv"
	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine (a process waiter, or pgx's)
// outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// connectURL connects with url and closes the connection when the test ends.
func connectURL(t *testing.T, u string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

// sqlState returns the SQLSTATE of err, or "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestStartConnectQuery(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	const pw = `pw: with 'quotes' \ and colons:`
	s := Start(t, Options{Password: pw})
	t.Logf("started in %v", time.Since(begin).Round(time.Millisecond))
	if want := "postgres://kanmon@" + s.Addr() + "/kanmon?sslmode=disable"; s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	if s.Password() != pw || strings.Contains(s.URL(), "pw") {
		t.Errorf("Password() = %q, URL() = %q", s.Password(), s.URL())
	}

	// The URL with the password file.
	pf := s.PassFile(t)
	if fi, err := os.Stat(pf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("PassFile %s: %v, %v; want mode 0600", pf, fi.Mode(), err)
	}
	c, err := connectURL(t, s.URL()+"&passfile="+url.QueryEscape(pf))
	if err != nil {
		t.Fatalf("connecting with the passfile: %v", err)
	}
	ctx := context.Background()
	for _, q := range []string{
		"CREATE TABLE accounts (name text PRIMARY KEY, generation bigint NOT NULL)",
		"INSERT INTO accounts VALUES ('alice', 1), ('bob', 2)",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var n, sum int64
	if err := c.QueryRow(ctx, "SELECT count(*), sum(generation) FROM accounts").Scan(&n, &sum); err != nil || n != 2 || sum != 3 {
		t.Fatalf("SELECT = %d, %d, %v; want 2, 3", n, sum, err)
	}
	var user, db, enc string
	if err := c.QueryRow(ctx, "SELECT current_user, current_database(), pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()").Scan(&user, &db, &enc); err != nil ||
		user != Role || db != Database || enc != "UTF8" {
		t.Errorf("current_user, current_database(), encoding = %q, %q, %q, %v", user, db, enc, err)
	}
	var fsync, sc, mc string
	if err := c.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('synchronous_commit'), current_setting('max_connections')").Scan(&fsync, &sc, &mc); err != nil ||
		fsync != "off" || sc != "on" || mc != "100" {
		t.Errorf("fsync, synchronous_commit, max_connections = %q, %q, %q, %v", fsync, sc, mc, err)
	}

	// Conn, the test's own connection, sees the same database.
	if err := s.Conn(t).QueryRow(ctx, "SELECT count(*) FROM accounts").Scan(&n); err != nil || n != 2 {
		t.Errorf("Conn: count = %d, %v", n, err)
	}

	// A wrong password, and the superuser over TCP, are refused.
	if _, err := connectURL(t, strings.Replace(s.URL(), "kanmon@", "kanmon:wrong@", 1)); sqlState(err) != "28P01" {
		t.Errorf("wrong password: %v, want SQLSTATE 28P01", err)
	}
	if _, err := connectURL(t, strings.Replace(s.URL(), "kanmon@", "postgres:x@", 1)); sqlState(err) != "28P01" {
		t.Errorf("superuser over TCP: %v, want SQLSTATE 28P01", err)
	}
}

func TestRandomPassword(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	if len(s.Password()) != 24 {
		t.Errorf("Password() = %q, want 24 random characters", s.Password())
	}
	c, err := connectURL(t, strings.Replace(s.URL(), "kanmon@", "kanmon:"+s.Password()+"@", 1))
	if err != nil {
		t.Fatalf("connecting with Password(): %v", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStopStartKeepsData(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	ctx := context.Background()
	c := s.Conn(t)
	if _, err := c.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()

	begin := time.Now()
	s.Stop(t)
	t.Logf("stopped in %v", time.Since(begin).Round(time.Millisecond))
	s.Stop(t) // a no-op
	if err := c.Ping(ctx); err == nil {
		t.Fatal("the connection still answers after Stop")
	}
	if _, err := connectURL(t, s.URL()+"&connect_timeout=2"); err == nil {
		t.Fatal("connected after Stop")
	}

	begin = time.Now()
	s.Start(t)
	t.Logf("started again in %v", time.Since(begin).Round(time.Millisecond))
	if s.Addr() != addr {
		t.Errorf("Addr() = %s after Start, was %s", s.Addr(), addr)
	}
	var v int
	if err := s.Conn(t).QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after Stop and Start: v = %d, %v; want 42", v, err)
	}
	if log := s.Log(); !strings.Contains(log, "pgtest: run 2:") || !strings.Contains(log, "database system was shut down at") {
		t.Errorf("the log does not show a clean restart:\n%s", log)
	}
}

func TestKillRecovers(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	ctx := context.Background()
	c := s.Conn(t)
	if _, err := c.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	// Killed right after the commit returned, which must survive.
	begin := time.Now()
	s.Kill(t)
	t.Logf("killed in %v", time.Since(begin).Round(time.Millisecond))
	s.Kill(t) // a no-op
	if procs := serverProcs(s.dataDir); len(procs) != 0 {
		t.Errorf("processes %v of the server survived Kill", procs)
	}
	if err := c.Ping(ctx); err == nil {
		t.Fatal("the connection still answers after Kill")
	}

	begin = time.Now()
	s.Start(t)
	t.Logf("recovered and started in %v", time.Since(begin).Round(time.Millisecond))
	var v int
	if err := s.Conn(t).QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 7 {
		t.Fatalf("after Kill and Start: v = %d, %v; want 7", v, err)
	}
	if log := s.Log(); !strings.Contains(log, "database system was interrupted") || !strings.Contains(log, "redo done") {
		t.Errorf("the log does not show crash recovery:\n%s", log)
	}
}

// TestKillThenCleanup leaves a killed server to the cleanup, which must
// remove what the postmaster left behind.
func TestKillThenCleanup(t *testing.T) {
	t.Parallel()
	var dir string
	t.Run("kill", func(t *testing.T) {
		s := Start(t, Options{})
		dir = s.dir
		s.Kill(t)
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s after cleanup: %v", dir, err)
	}
}

// TestUnavailable checks that a missing PostgreSQL skips the test, and fails
// it under CI=true.
func TestUnavailable(t *testing.T) {
	testenv.CheckUnavailable(t, binary)
}

func TestVersionLess(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		less bool
	}{
		{"9.6", "15", true},
		{"15", "16", true},
		{"16", "15", false},
		{"15", "15", false},
		{"9.6", "9.10", true},
	} {
		if got := versionLess(c.a, c.b); got != c.less {
			t.Errorf("versionLess(%q, %q) = %v, want %v", c.a, c.b, got, c.less)
		}
	}
}
