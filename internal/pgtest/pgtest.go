//go:build unix

// Package pgtest starts private, real PostgreSQL clusters for tests.
//
// Start runs initdb into a fresh temporary directory, starts the postmaster
// as a child process listening on a free loopback port, creates the role
// "kanmon" with a password and the database "kanmon" owned by it, and stops
// the server and removes the directory at t.Cleanup. Every call gets its own
// cluster, so tests (and packages run in parallel by go test) never share
// state. Nothing from /etc/postgresql is read and no system PostgreSQL
// service is used. Whenever the test has failed, the cleanup prints the
// server's log.
//
// The postmaster is run directly, not through pg_ctl, which would detach it:
// as a child of the test binary it gets SIGQUIT (immediate shutdown) from the
// kernel if the test binary dies without cleaning up, and Stop and Kill see
// it exit. Stop does what "pg_ctl stop -m fast" does.
//
// The cluster is made for speed, not durability: fsync and full_page_writes
// are off, so nothing waits for the disk. Committed data survives Stop and
// Start, and Kill and Start (crash recovery), as long as the operating system
// does not crash. synchronous_commit stays on: with fsync off it costs only a
// write to the page cache, and it makes every commit that returned survive
// Kill.
//
// Clients connect over TCP with SCRAM-SHA-256 (URL and Password, or
// PassFile). The superuser "postgres" has no password and can only connect
// through the Unix socket, which lies in the data directory and only the
// cluster's owner can reach.
//
// initdb and postgres refuse to run as root. Running as root (as CI does),
// this package runs them as the "postgres" system user that Debian's
// postgresql package creates, and gives it the cluster directory; as an
// ordinary user, they run as that user.
//
// The binaries are looked up in /usr/lib/postgresql/VERSION/bin (Debian's
// place, highest version first), then through PATH. When they are missing
// the test is skipped, except when the environment variable CI is "true":
// then a missing PostgreSQL fails the test, so that CI cannot pass by
// skipping the real-PostgreSQL tests.
package pgtest

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install postgresql"

const (
	// Role is the login role Start creates, with Options.Password.
	Role = "kanmon"
	// Database is the database Start creates, owned by Role.
	Database = "kanmon"
	// superuser is the bootstrap superuser, reachable only through the
	// Unix socket.
	superuser = "postgres"
	// minMajor is the oldest PostgreSQL this package can configure
	// (SCRAM-SHA-256 came with 10).
	minMajor = 10
	// deathSig is what the kernel sends initdb and the postmaster if the
	// test binary dies without cleaning up: SIGQUIT, immediate shutdown.
	deathSig = syscall.SIGQUIT

	// initdbTimeout bounds initdb (which takes about 1.3 s).
	initdbTimeout = 60 * time.Second
	// startTimeout bounds how long a start waits for the server to accept
	// connections (crash recovery included).
	startTimeout = 30 * time.Second
	// stopTimeout bounds how long Stop and the cleanup wait for the
	// postmaster to exit after asking it to shut down.
	stopTimeout = 30 * time.Second
)

// Options configures one cluster. The zero value is usable.
type Options struct {
	// Password is the password of the role "kanmon". Empty: a random
	// one, which Password returns. It must not contain NUL or line
	// breaks.
	Password string
}

// Server is one private PostgreSQL cluster and its postmaster.
type Server struct {
	binDir   string
	id       identity
	dir      string // owned by the cluster's user: data/, postgres.log, initdb.log
	dataDir  string // dir/data; also the Unix socket directory
	password string
	port     int
	logs     testenv.Logs   // postgres.log, over all runs
	runner   testenv.Runner // the postmaster
	failLog  testenv.FailureLog

	mu   sync.Mutex
	runs int // starts so far, for the log's markers
}

// describe names the server in messages: "PostgreSQL 127.0.0.1:PORT".
func (s *Server) describe() string { return "PostgreSQL " + s.Addr() }

// Addr returns the server's "127.0.0.1:port".
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns "postgres://kanmon@127.0.0.1:PORT/kanmon?sslmode=disable". It
// carries no password: give Password to the client separately, or append
// "&passfile=" and PassFile's path (url.QueryEscape'd).
func (s *Server) URL() string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Role),
		Host:     s.Addr(),
		Path:     "/" + Database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Password returns the password of the role "kanmon": Options.Password, or
// the random one Start made.
func (s *Server) Password() string { return s.password }

// PassFile writes a libpq password file (mode 0600) with the line for URL's
// host, port, database and role into a t.TempDir, and returns its path, for
// the URL's passfile parameter or PGPASSFILE.
func (s *Server) PassFile(t testing.TB) string {
	t.Helper()
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	line := strings.Join([]string{"127.0.0.1", strconv.Itoa(s.port), Database, Role, esc.Replace(s.password)}, ":") + "\n"
	path := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatalf("pgtest: PassFile: %v", err)
	}
	return path
}

// Conn connects to the database "kanmon" as the role "kanmon" over TCP, for
// the test's own queries, and closes the connection when the test ends. A
// pgx.Conn is not safe for concurrent use; call Conn once per goroutine. A
// connection does not survive Stop or Kill: call Conn again after Start.
func (s *Server) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(s.URL())
	if err != nil {
		t.Fatalf("pgtest: Conn: %v", err)
	}
	cfg.Password = s.password
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: Conn: connecting to %s: %v", s.describe(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// Log returns the server's log: what the postmaster and its processes wrote
// in all of its runs, each run introduced by a line "pgtest: run N: ...". The
// cleanup prints it by itself when the test has failed.
func (s *Server) Log() string {
	return s.logs.String()
}
