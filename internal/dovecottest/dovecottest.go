//go:build unix

// Package dovecottest starts a private Dovecot for end-to-end tests.
//
// Start writes a Dovecot 2.3 configuration into a fresh temporary directory,
// runs "dovecot -F -c CONF" as a child process listening on free loopback
// ports, waits until IMAP greets, and stops the whole process group at
// t.Cleanup. Every call gets its own instance, so tests (and packages run in
// parallel by go test) never share state.
//
// When the dovecot binary is missing the test is skipped, except when the
// environment variable CI is "true": then a missing Dovecot fails the test, so
// that CI cannot pass by skipping the real-server tests.
//
// Running as root (as CI does), Dovecot's own processes run as the Debian
// users "dovecot" and "dovenull" and mail is owned by "nobody", because
// Dovecot refuses mail access as uid 0. Running as an ordinary user, every
// Dovecot process and the mail run as that user ("rootless" mode).
//
// Unlike a default Dovecot, a failed login is answered at once: the per-IP
// auth penalty is off and failures carry "nodelay" (a wrong master password
// is the exception: it still takes about 0.5 s). Plaintext logins are allowed
// without TLS, and the mechanisms are PLAIN and LOGIN. The master user logs in
// only through SASL PLAIN with an authorization identity; there is no
// "user*master" login-name separator.
package dovecottest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install dovecot-imapd dovecot-pop3d dovecot-submissiond"

const (
	// startTimeout bounds how long Start waits for the IMAP greeting.
	startTimeout = 10 * time.Second
	// stopGrace bounds how long Stop waits for the master to exit after
	// SIGTERM before it kills the process group. The master usually exits
	// within milliseconds, but now and then takes seconds.
	stopGrace = 300 * time.Millisecond
	// bindAttempts is how often Start retries when a chosen port was taken
	// between choosing it and Dovecot binding it.
	bindAttempts = 5
)

// User is one account of the passwd-file passdb and userdb.
type User struct {
	// Name is the login name. Dovecot lowercases login names
	// (auth_username_format = %Lu, or Options.UsernameFormat), so names
	// are stored lowercased.
	Name string
	// Password is stored as {PLAIN}; it must not be empty or contain ':'
	// or a line break.
	Password string
}

// Options configures one Dovecot instance. The zero value is a usable server
// with no users.
type Options struct {
	// Users are the accounts of the passwd-file passdb and userdb.
	Users []User
	// MasterUser and MasterPassword, when set, add a master passdb
	// (master = yes, pass = yes), so that SASL PLAIN with
	// authzid = user, authcid = MasterUser logs in as user. The target
	// user must exist in Users.
	MasterUser, MasterPassword string
	// SubmissionRelay is the host:port of an SMTP server (for instance a
	// Sink). When set, the submission protocol is enabled and relays
	// there without TLS or authentication; SubmissionAddr is then set.
	SubmissionRelay string
	// LoginTrustedNetworks becomes login_trusted_networks (for ID
	// x-originating-ip and XCLIENT forwarding), e.g. {"127.0.0.0/8"}.
	// Default: none.
	LoginTrustedNetworks []string
	// MaxUserConnections becomes mail_max_userip_connections and sizes the
	// process limits. Default: 1000 (Dovecot's own default is 10).
	MaxUserConnections int
	// HAProxy adds a second plaintext listener per protocol that expects a
	// PROXY protocol (v1 or v2) header first (inet_listener { haproxy =
	// yes }), with haproxy_trusted_networks = 127.0.0.0/8: Dovecot then
	// logs the header's source as rip=. Their addresses are
	// IMAPHAProxyAddr, POP3HAProxyAddr and SubmissionHAProxyAddr.
	// Default: none.
	HAProxy bool
	// TLS enables ssl = yes with a self-signed certificate for localhost
	// and 127.0.0.1: STARTTLS/STLS on the plain ports, and implicit-TLS
	// listeners at IMAPSAddr, POP3SAddr (and SubmissionsAddr). Use
	// Server.TLSConfig to trust it. Default: ssl = no.
	TLS bool
	// IMAPClientLimit, when above 1, lets one imap process serve that
	// many logged-in sessions (service imap { client_limit = N,
	// service_count = 0 }), so that thousands of IDLE sessions do not
	// need thousands of processes. All mail runs as one user, which
	// this needs. Default 1, Dovecot's own: one imap process per
	// session, started at login and ended at logout.
	IMAPClientLimit int
	// UsernameFormat becomes auth_username_format, the form Dovecot
	// gives a login name before it looks it up: "%Ln" lower-cases it
	// and strips any domain, as Zimbra does, so that "alice@anything"
	// logs in as alice with alice's password (and a User whose Name
	// has an "@" can no longer log in). It must be made of letters,
	// digits and "%.@_-". Default "%Lu", Dovecot's own: the name
	// lower-cased, with its domain.
	UsernameFormat string
}

// DefaultUsernameFormat is auth_username_format unless
// Options.UsernameFormat says otherwise: Dovecot's own default.
const DefaultUsernameFormat = "%Lu"

// Server is a running private Dovecot.
type Server struct {
	// IMAPAddr and POP3Addr are the plain (or STARTTLS) listeners,
	// "127.0.0.1:port".
	IMAPAddr, POP3Addr string
	// SubmissionAddr is the submission listener; empty unless
	// Options.SubmissionRelay is set.
	SubmissionAddr string
	// IMAPSAddr, POP3SAddr and SubmissionsAddr are the implicit-TLS
	// listeners; empty unless Options.TLS is set.
	IMAPSAddr, POP3SAddr, SubmissionsAddr string
	// IMAPHAProxyAddr, POP3HAProxyAddr and SubmissionHAProxyAddr are the
	// listeners that take a PROXY header; empty unless Options.HAProxy
	// is set (SubmissionHAProxyAddr also needs SubmissionRelay).
	IMAPHAProxyAddr, POP3HAProxyAddr, SubmissionHAProxyAddr string
	// Dir is the instance directory: dovecot.conf, passwd files, the log,
	// base_dir (run/) and the users' homes (home/NAME/Maildir).
	Dir string

	opts     Options
	id       identity
	users    map[string]bool
	tlsPool  *x509.CertPool
	mu       sync.Mutex
	proc     *process
	stopOnce sync.Once
	seq      int // Deliver's file counter
	attempts int // launches so far, for the bind-race test
}

// Available reports the path of the dovecot binary and whether it exists.
// It looks in PATH and then in /usr/sbin and /usr/local/sbin, which are often
// missing from an ordinary user's PATH.
func Available() (path string, ok bool) {
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p, true
	}
	for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// inCI reports whether the environment says this is a CI run.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// unavailable skips the test, or fails it under CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("dovecottest: %s (CI=true, so this is a failure, not a skip)", msg)
		return
	}
	t.Skipf("dovecottest: %s; skipping real-Dovecot test", msg)
}

// Start starts a private Dovecot configured by opts and stops it when the
// test ends. It fails the test when Dovecot does not come up within 10
// seconds; whenever the test has failed, the cleanup prints the Dovecot log.
// Set DOVECOTTEST_KEEP=1 to keep the instance directory for inspection.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, ok := Available()
	if !ok {
		unavailable(t, "dovecot binary not found in PATH, /usr/sbin or /usr/local/sbin; install it with: %s", InstallHint)
		return nil
	}
	if v, err := dovecotVersion(bin); err != nil {
		unavailable(t, "%s --version: %v", bin, err)
		return nil
	} else if !strings.HasPrefix(v, "2.3.") {
		unavailable(t, "found Dovecot %s, but this package writes a Dovecot 2.3 configuration", v)
		return nil
	}
	if opts.MaxUserConnections <= 0 {
		opts.MaxUserConnections = 1000
	}
	if opts.UsernameFormat == "" {
		opts.UsernameFormat = DefaultUsernameFormat
	}
	if err := validate(&opts); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	id, err := currentIdentity()
	if err != nil {
		unavailable(t, "%v", err)
		return nil
	}
	dir, err := makeDir(id)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	s := &Server{Dir: dir, opts: opts, id: id, users: map[string]bool{}}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("dovecottest: Dovecot log of %s:\n%s", dir, s.Log())
		}
		if os.Getenv("DOVECOTTEST_KEEP") != "" {
			t.Logf("dovecottest: keeping %s (DOVECOTTEST_KEEP is set)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err := s.writeFiles(); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	for attempt := 1; ; attempt++ {
		err := s.launch(bin)
		if err == nil {
			break
		}
		if errors.Is(err, errAddrInUse) && attempt < bindAttempts {
			continue
		}
		// The cleanup prints the log, since the test has failed.
		t.Fatalf("dovecottest: starting %s -F -c %s: %v", bin, filepath.Join(dir, "dovecot.conf"), err)
	}
	return s
}

// dovecotVersion runs "dovecot --version" once per binary.
var dovecotVersion = func() func(bin string) (string, error) {
	var mu sync.Mutex
	cache := map[string]string{}
	return func(bin string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if v, ok := cache[bin]; ok {
			return v, nil
		}
		out, err := exec.Command(bin, "--version").Output()
		if err != nil {
			return "", err
		}
		v := strings.TrimSpace(string(out))
		cache[bin] = v
		return v, nil
	}
}()

// testHookPortsPicked, when set by a test, runs after each choice of ports.
var testHookPortsPicked func(*Server)

// errAddrInUse marks a start that failed because a chosen port was taken.
var errAddrInUse = errors.New("a listener port was already in use")

// process is one run of the dovecot master.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returned
	err    error         // cmd.Wait's result, valid after exited
}

// launch picks ports, writes the configuration and starts Dovecot, then waits
// until IMAP greets.
func (s *Server) launch(bin string) error {
	if err := s.pickPorts(); err != nil {
		return err
	}
	s.attempts++
	if testHookPortsPicked != nil {
		testHookPortsPicked(s)
	}
	conf, err := s.config()
	if err != nil {
		return err
	}
	confPath := filepath.Join(s.Dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	// Each attempt starts with an empty log, so a retry's log is its own.
	for _, name := range []string{"dovecot.log", "dovecot.stderr"} {
		if err := os.WriteFile(filepath.Join(s.Dir, name), nil, 0o644); err != nil {
			return err
		}
	}
	out, err := os.OpenFile(filepath.Join(s.Dir, "dovecot.stderr"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(bin, "-F", "-c", confPath)
	cmd.Dir = s.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if err := s.waitReady(p); err != nil {
		stopProcess(p)
		if strings.Contains(s.Log(), "Address already in use") {
			return fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return err
	}
	return nil
}

// waitReady waits for a real IMAP greeting. While the auth process is still
// starting, imap-login greets with "* OK Waiting for authentication process
// to respond.."; that does not count.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("dovecot exited before it was ready: %v", p.err)
		default:
		}
		if line, err := greeting(s.IMAPAddr); err == nil &&
			strings.HasPrefix(line, "* OK") && !strings.Contains(line, "Waiting for auth") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no IMAP greeting at %s within %v", s.IMAPAddr, startTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// greeting dials addr and returns the first line it sends.
func greeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	c.Write([]byte("z LOGOUT\r\n"))
	return strings.TrimRight(line, "\r\n"), nil
}

// Stop shuts Dovecot down: SIGTERM to its whole process group, then, if the
// master has not exited within 300 ms, SIGKILL to the group, and SIGKILL to
// any process of the group still alive. (A SIGTERM to the master alone stops
// cleanly but takes a second; the group signal takes milliseconds and only
// adds "Killed with signal 15" warnings to the log.) It is called at
// t.Cleanup and may be called earlier, for example to test a backend that
// goes away; it is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		p := s.proc
		s.mu.Unlock()
		if p != nil {
			stopProcess(p)
		}
	})
}

// stopProcess stops one dovecot master and its process group.
func stopProcess(p *process) {
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
	// The master normally takes its children with it; make sure no
	// stray process of the group survives.
	deadline := time.Now().Add(5 * time.Second)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}

// groupAlive reports whether any live (non-zombie) process of group pgid
// exists. It reads /proc where there is one, since a zombie that nobody reaps
// would keep kill(-pgid, 0) succeeding.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid pgrp ...
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

// Log returns the Dovecot log (and anything the master wrote to stderr), for
// printing when a test fails. Start's cleanup prints it by itself when the
// test has failed.
func (s *Server) Log() string {
	var b strings.Builder
	for _, name := range []string{"dovecot.stderr", "dovecot.log"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		b.Write(data)
		if data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// TLSConfig returns a client configuration that trusts the server's
// self-signed certificate (server name "localhost"; the certificate also
// covers 127.0.0.1). It returns nil when Options.TLS was not set.
func (s *Server) TLSConfig() *tls.Config {
	if s.tlsPool == nil {
		return nil
	}
	return &tls.Config{RootCAs: s.tlsPool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// Deliver puts rfc822 into user's INBOX by writing it into the Maildir's new/
// directory (through tmp/, as a Maildir delivery does). Dovecot notices it at
// the next SELECT, NOOP or POP3 login.
func (s *Server) Deliver(t testing.TB, user string, rfc822 []byte) {
	t.Helper()
	name := strings.ToLower(user)
	if !s.users[name] {
		t.Fatalf("dovecottest: Deliver: no user %q", user)
	}
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	now := time.Now()
	file := fmt.Sprintf("%d.M%dP%dQ%d.dovecottest", now.Unix(), now.Nanosecond()/1000, os.Getpid(), seq)
	maildir := filepath.Join(s.home(name), "Maildir")
	tmp := filepath.Join(maildir, "tmp", file)
	if err := os.WriteFile(tmp, rfc822, 0o600); err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
	if err := s.id.chown(tmp); err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
	if err := os.Rename(tmp, filepath.Join(maildir, "new", file)); err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
}
