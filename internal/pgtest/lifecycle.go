//go:build unix

package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

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
