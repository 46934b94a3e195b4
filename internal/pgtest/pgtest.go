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
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
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

// binary is the PostgreSQL this package runs, 10 or later (SCRAM-SHA-256
// came with 10). Its Name is only for messages: Available finds the
// binaries.
var binary = &testenv.Binary{
	Name:        "postgres",
	Package:     "pgtest",
	Skipping:    "real-PostgreSQL",
	InstallHint: InstallHint,
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	Version: func(out string) (string, error) {
		f := strings.Fields(out)
		if len(f) < 3 || f[1] != "(PostgreSQL)" {
			return "", fmt.Errorf("no version in %q", strings.TrimSpace(out))
		}
		return f[2], nil
	},
	Supported: func(v string) error {
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err != nil || n < minMajor {
			return fmt.Errorf("found PostgreSQL %s, but this package needs %d or later", v, minMajor)
		}
		return nil
	},
}

// Available reports the directory that holds PostgreSQL's initdb and postgres
// binaries, and whether there is one: the highest version's
// /usr/lib/postgresql/VERSION/bin, else the directory of the initdb found in
// PATH (symbolic links resolved), when postgres is next to it (initdb runs the
// postgres of its own directory).
func Available() (binDir string, ok bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[j])), filepath.Base(filepath.Dir(dirs[i])))
	})
	for _, d := range dirs {
		if executable(filepath.Join(d, "initdb")) && executable(filepath.Join(d, "postgres")) {
			return d, true
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", false
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	d, err := filepath.Abs(filepath.Dir(p))
	if err != nil || !executable(filepath.Join(d, "postgres")) {
		return "", false
	}
	return d, true
}

// versionLess orders directory names like "9.6", "15" and "16" by number.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errx := strconv.Atoi(as[i])
		y, erry := strconv.Atoi(bs[i])
		if errx != nil || erry != nil {
			return a < b
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// executable reports whether path is a regular file someone may execute.
func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// binaries returns the directory of supported binaries, or skips (fails
// under CI) the test.
func binaries(t testing.TB) (string, bool) {
	t.Helper()
	dir, ok := Available()
	if !ok {
		binary.Unavailable(t, "initdb and postgres not found in /usr/lib/postgresql/*/bin or PATH; install them with: %s", InstallHint)
		return "", false
	}
	if err := binary.Check(filepath.Join(dir, "postgres")); err != nil {
		binary.Unavailable(t, "%v", err)
		return "", false
	}
	return dir, true
}

// identity is the user the cluster's processes run as.
type identity struct {
	name     string
	uid, gid int
	cred     *syscall.Credential // nil: the current user
}

// currentIdentity returns the user to run initdb and postgres as: the
// "postgres" system user when running as root, which both refuse to run as,
// else the current user.
func currentIdentity() (identity, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return identity{}, fmt.Errorf("current user: %v", err)
		}
		return identity{name: u.Username, uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return identity{}, fmt.Errorf("running as root, and there is no user postgres to run PostgreSQL as (the postgresql package creates it; install it with: %s)", InstallHint)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || uid == 0 {
		return identity{}, fmt.Errorf("user postgres has uid %s, gid %s; want a non-root numeric one", u.Uid, u.Gid)
	}
	// An empty Groups drops root's supplementary groups.
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	return identity{name: u.Username, uid: uid, gid: gid, cred: cred}, nil
}

// chown gives path to the cluster's user, when that is not the current one.
func (id identity) chown(path string) error {
	if id.cred == nil {
		return nil
	}
	return os.Lchown(path, id.uid, id.gid)
}

// randomPassword returns 24 random characters of base64url.
func randomPassword() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Start creates a private PostgreSQL cluster, starts it on a free loopback
// port, creates the role "kanmon" with opts.Password and the database
// "kanmon" owned by it, and returns once the server accepts connections. The
// cleanup at the end of the test shuts it down and removes it; set
// PGTEST_KEEP=1 to keep the cluster directory for inspection. Start fails the
// test when the server does not come up within 30 seconds, with its log.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	binDir, ok := binaries(t)
	if !ok {
		return nil
	}
	if strings.ContainsAny(opts.Password, "\x00\r\n") {
		t.Fatalf("pgtest: Password must not contain NUL or line breaks")
	}
	if opts.Password == "" {
		opts.Password = randomPassword()
	}
	id, err := currentIdentity()
	if err != nil {
		binary.Unavailable(t, "%v", err)
		return nil
	}
	// The cluster directory, mode 0700, owned by the cluster's user. As
	// root, every directory above it must be searchable by the postgres
	// user. The cleanup registered here removes it after s.cleanup.
	dir, err := testenv.MakeDir(t, "pgtest", id.cred != nil)
	if err == nil {
		err = id.chown(dir)
	}
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s := &Server{binDir: binDir, id: id, dir: dir, dataDir: filepath.Join(dir, "data"), password: opts.Password,
		logs: testenv.Logs{Dir: dir, Output: "postgres.log", Perm: 0o600, Keep: true}}
	t.Cleanup(func() { s.cleanup(t) })
	if err := s.initdb(); err != nil {
		t.Fatalf("pgtest: %v\n%s", err, testenv.Logs{Dir: dir, Output: "initdb.log"}.String())
	}
	err = testenv.RetryPorts(1, func(ports []int) error {
		s.port = ports[0]
		return s.launch()
	})
	if err != nil {
		t.Fatalf("pgtest: starting %s -D %s: %v\nlog of %s:\n%s", filepath.Join(binDir, "postgres"), s.dataDir, err, s.describe(), s.failLog.Shown(s.Log()))
	}
	if err := s.createRole(); err != nil {
		t.Fatalf("pgtest: creating role and database %s: %v\nlog of %s:\n%s", Role, err, s.describe(), s.failLog.Shown(s.Log()))
	}
	return s
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

// childEnv is the environment of initdb and postgres: this process's,
// without libpq's PG* variables, in the C locale so that messages are in
// English.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "LANGUAGE=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// command returns bin with args, to run as the cluster's user with the
// environment childEnv, killed when ctx ends.
func (s *Server) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, bin), args...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.id.cred}
	return cmd
}

// initdb creates the cluster in dataDir: UTF8 and the C locale, the
// superuser "postgres" without a password, and an access policy of its own
// (pg_hba.conf).
func (s *Server) initdb() error {
	out, err := os.OpenFile(filepath.Join(s.dir, "initdb.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), initdbTimeout)
	defer cancel()
	cmd := s.command(ctx, "initdb",
		"-D", s.dataDir,
		"-U", superuser,
		"-E", "UTF8",
		"--locale", "C",
		"--auth-local", "trust",
		"--auth-host", "scram-sha-256",
		"--no-sync",
	)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	testenv.GroupAttr(cmd, deathSig)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb -D %s: %v", s.dataDir, err)
	}
	// Trust only the superuser, only on the Unix socket (which only the
	// cluster's user can reach); everyone else over TCP with
	// SCRAM-SHA-256.
	hba := "# Written by kanmon's internal/pgtest.\n" +
		"# TYPE  DATABASE  USER      ADDRESS       METHOD\n" +
		"local   all       " + superuser + "  trust\n" +
		"host    all       all       127.0.0.1/32  scram-sha-256\n"
	if err := s.writeFile(filepath.Join(s.dataDir, "pg_hba.conf"), hba); err != nil {
		return err
	}
	// postgresql.conf takes pgtest.conf last, so its settings win.
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# Added by kanmon's internal/pgtest.\ninclude 'pgtest.conf'\n")
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}

// writeConfig writes pgtest.conf, the settings that override initdb's.
func (s *Server) writeConfig() error {
	lines := []string{
		"# Written by kanmon's internal/pgtest.",
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(s.port),
		"unix_socket_directories = '" + s.dataDir + "'",
		"unix_socket_permissions = 0700",
		"max_connections = 100",
		"password_encryption = 'scram-sha-256'",
		// Speed over durability: this cluster lives for one test. A
		// commit still writes its WAL to the page cache before it
		// returns (synchronous_commit = on, without the fsync), so
		// that it survives Kill; off would save nothing measurable.
		"fsync = off",
		"full_page_writes = off",
		"synchronous_commit = on",
		// Dynamic shared memory in the data directory rather than
		// /dev/shm, so that nothing outlives the directory.
		"dynamic_shared_memory_type = mmap",
		"shared_buffers = 32MB",
		// The log goes to stderr, which is postgres.log.
		"logging_collector = off",
		"log_destination = 'stderr'",
		"log_line_prefix = '%m [%p] %q%u@%d '",
		"lc_messages = 'C'",
		"timezone = 'UTC'",
		"log_timezone = 'UTC'",
	}
	return s.writeFile(filepath.Join(s.dataDir, "pgtest.conf"), strings.Join(lines, "\n")+"\n")
}

// writeFile writes data to path, mode 0600, owned by the cluster's user.
func (s *Server) writeFile(path, data string) error {
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return err
	}
	return s.id.chown(path)
}

// launch writes pgtest.conf for s.port, starts the postmaster in the
// cluster directory, with its output appended to postgres.log after a line
// that marks the run, and waits until it accepts connections. On failure the
// server's processes are gone, and the error is marked testenv.ErrAddrInUse
// when the port was taken.
func (s *Server) launch() error {
	if err := s.writeConfig(); err != nil {
		return err
	}
	cfg, err := s.superConfig()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.runs++
	mark := fmt.Sprintf("pgtest: run %d: postgres -D %s on %s as user %s\n", s.runs, s.dataDir, s.Addr(), s.id.name)
	s.mu.Unlock()
	if err := s.logs.Append(mark); err != nil {
		return err
	}
	err = s.runner.Start(testenv.Launch{
		Cmd:      s.command(context.Background(), "postgres", "-D", s.dataDir),
		Logs:     s.logs,
		DeathSig: deathSig,
		// The superuser can connect and query after any crash recovery.
		Ready:   func() error { return ping(cfg) },
		Timeout: startTimeout,
	})
	if err != nil {
		// The postmaster's group is gone; its children are not in it.
		s.killAll()
	}
	return err
}

// superConfig returns the connection settings of the superuser through the
// Unix socket.
func (s *Server) superConfig() (*pgx.ConnConfig, error) {
	return pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=5",
		s.dataDir, s.port, superuser))
}

// connected connects with cfg and runs f on the connection, all within
// timeout.
func connected(cfg *pgx.ConnConfig, timeout time.Duration, f func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return f(ctx, c)
}

// ping connects with cfg and runs SELECT 1.
func ping(cfg *pgx.ConnConfig) error {
	return connected(cfg, 5*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		var one int
		return c.QueryRow(ctx, "SELECT 1").Scan(&one)
	})
}

// createRole creates the login role and its database.
func (s *Server) createRole() error {
	cfg, err := s.superConfig()
	if err != nil {
		return err
	}
	// Utility statements take no parameters; the password is a literal
	// (standard_conforming_strings is on, so only ' needs doubling).
	pw := "'" + strings.ReplaceAll(s.password, "'", "''") + "'"
	return connected(cfg, 30*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		for _, q := range []string{
			"CREATE ROLE " + Role + " LOGIN PASSWORD " + pw,
			"CREATE DATABASE " + Database + " OWNER " + Role,
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
}

// Start starts the server again after Stop or Kill, on the same port and data
// (after Kill, PostgreSQL first recovers from its WAL), and waits until it
// accepts connections. It fails the test when the server is running already
// or does not come up within 30 seconds.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if s.runner.Process().Running() {
		t.Fatalf("pgtest: Start: %s is running", s.describe())
	}
	if err := s.launch(); err != nil {
		t.Fatalf("pgtest: restarting %s: %v\nlog of %s:\n%s", s.describe(), err, s.describe(), s.failLog.Shown(s.Log()))
	}
}

// Stop shuts the server down as "pg_ctl stop -m fast" does: SIGINT to the
// postmaster, which disconnects every client, writes a shutdown checkpoint
// and exits. It waits until it has exited, and fails the test (after killing
// it) when that takes more than 30 seconds. It does nothing when the server
// is not running. Start starts it again.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	p := s.runner.Process()
	if !p.Running() {
		return
	}
	if err := s.shutdown(p, syscall.SIGINT); err != nil {
		t.Fatalf("pgtest: Stop: %v\nlog of %s:\n%s", err, s.describe(), s.failLog.Shown(s.Log()))
	}
}

// shutdown sends sig to the postmaster and waits for it to exit; after
// stopTimeout it kills every process of the server.
func (s *Server) shutdown(p *testenv.Process, sig syscall.Signal) error {
	syscall.Kill(p.Pid(), sig)
	select {
	case <-p.Exited():
		return nil
	case <-time.After(stopTimeout):
		s.killAll()
		return fmt.Errorf("the postmaster did not exit within %v of %v; killed it", stopTimeout, sig)
	}
}

// Kill kills the server as a crash would: SIGKILL to the postmaster and to
// every process of the server (backends, checkpointer, WAL writer...), and
// waits until they are gone. The data directory is left as it was, shared
// memory included, and Start recovers from the WAL: every commit that
// returned before Kill is still there. Kill does nothing when the server is
// not running.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if !s.runner.Process().Running() {
		return
	}
	if err := s.killAll(); err != nil {
		t.Fatalf("pgtest: Kill: %v", err)
	}
}

// killAll kills the postmaster's process group (testenv.Process.Kill) and
// then every other process of the server until none is left. A process of
// the server is one whose working directory is the data directory: the
// postmaster changes into it, and its children inherit it (they are in
// sessions of their own, so the process group does not reach them). A new
// postmaster refuses to start while an old process still holds the shared
// memory.
func (s *Server) killAll() error {
	if p := s.runner.Process(); p != nil {
		p.Kill()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := serverProcs(s.dataDir)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of %s survived SIGKILL for 10 s", pids, s.describe())
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cleanup shuts the server down at the end of the test (immediate shutdown:
// no checkpoint, the data is thrown away) and prints its log when the test
// has failed. The cleanup that testenv.MakeDir registered then removes the
// cluster directory.
func (s *Server) cleanup(t testing.TB) {
	var errs []error
	if p := s.runner.Process(); p.Running() {
		if err := s.shutdown(p, syscall.SIGQUIT); err != nil {
			errs = append(errs, err)
		}
	}
	// Nothing should be left; make sure.
	if err := s.killAll(); err != nil {
		errs = append(errs, err)
	}
	// After Kill without Start, the postmaster's System V shared memory
	// segment is still there (the rest dies with the processes or lies
	// in the data directory).
	removeShm(s.dataDir)
	if err := errors.Join(errs...); err != nil {
		t.Errorf("pgtest: cleanup: %v", err)
	}
	s.failLog.Cleanup(t, "pgtest: log of "+s.describe(), s.Log)
}

// Log returns the server's log: what the postmaster and its processes wrote
// in all of its runs, each run introduced by a line "pgtest: run N: ...". The
// cleanup prints it by itself when the test has failed.
func (s *Server) Log() string {
	return s.logs.String()
}
