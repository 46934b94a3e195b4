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
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install dovecot-imapd dovecot-pop3d dovecot-submissiond"

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
	logs     testenv.Logs
	master   testenv.Runner
	mu       sync.Mutex
	stopOnce sync.Once
	seq      int // Deliver's file counter
	attempts int // launches so far, for the bind-race test
}

// dovecot is the binary Start runs: a Dovecot 2.3.
var dovecot = &testenv.Binary{
	Name:        "dovecot",
	Dirs:        []string{"/usr/sbin", "/usr/local/sbin"},
	Package:     "dovecottest",
	Skipping:    "real-Dovecot",
	InstallHint: InstallHint,
	Supported: func(v string) error {
		if !strings.HasPrefix(v, "2.3.") {
			return fmt.Errorf("found Dovecot %s, but this package writes a Dovecot 2.3 configuration", v)
		}
		return nil
	},
}

// Available reports the path of the dovecot binary and whether it exists.
// It looks in PATH and then in /usr/sbin and /usr/local/sbin, which are often
// missing from an ordinary user's PATH.
func Available() (path string, ok bool) {
	return dovecot.Find()
}

// Start starts a private Dovecot configured by opts and stops it when the
// test ends. It fails the test when Dovecot does not greet within 10 seconds
// (testenv.StartTimeout); whenever the test has failed, the cleanup prints
// the Dovecot log. Set DOVECOTTEST_KEEP=1 to keep the instance directory for
// inspection.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, ok := dovecot.Require(t)
	if !ok {
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
		dovecot.Unavailable(t, "%v", err)
		return nil
	}
	dir, err := makeDir(id)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	s := &Server{Dir: dir, opts: opts, id: id, users: map[string]bool{},
		logs: testenv.Logs{Dir: dir, Output: "dovecot.stderr", File: "dovecot.log", Perm: 0o644}}
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
	if err := testenv.RetryBind(func() error { return s.launch(bin) }); err != nil {
		// The cleanup prints the log, since the test has failed.
		t.Fatalf("dovecottest: starting %s -F -c %s: %v", bin, filepath.Join(dir, "dovecot.conf"), err)
	}
	return s
}

// testHookPortsPicked, when set by a test, runs after each choice of ports.
var testHookPortsPicked func(*Server)

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
	// The master gets SIGTERM if the test binary dies without cleaning up.
	return s.master.Launch([]string{bin, "-F", "-c", confPath}, s.logs, syscall.SIGTERM, s.greets, nil)
}

// greets reports whether IMAP answers with a real greeting. While the auth
// process is still starting, imap-login greets with "* OK Waiting for
// authentication process to respond.."; that does not count.
func (s *Server) greets() error {
	line, err := greeting(s.IMAPAddr)
	if err != nil {
		return fmt.Errorf("no IMAP greeting at %s: %w", s.IMAPAddr, err)
	}
	if !strings.HasPrefix(line, "* OK") || strings.Contains(line, "Waiting for auth") {
		return fmt.Errorf("IMAP at %s greets with %q", s.IMAPAddr, line)
	}
	return nil
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

// stopGrace bounds how long Stop waits for the master to exit after SIGTERM
// before it kills the process group. The master usually exits within
// milliseconds, but now and then takes seconds.
const stopGrace = 300 * time.Millisecond

// Stop shuts Dovecot down: SIGTERM to its whole process group, then, if the
// master has not exited within 300 ms, SIGKILL to the group, and SIGKILL to
// any process of the group still alive. (A SIGTERM to the master alone stops
// cleanly but takes a second; the group signal takes milliseconds and only
// adds "Killed with signal 15" warnings to the log.) It is called at
// t.Cleanup and may be called earlier, for example to test a backend that
// goes away; it is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if p := s.master.Process(); p != nil {
			p.Stop(stopGrace)
		}
	})
}

// Log returns the Dovecot log (and anything the master wrote to stderr), for
// printing when a test fails. Start's cleanup prints it by itself when the
// test has failed.
func (s *Server) Log() string {
	return s.logs.String()
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
