package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// revokedByePrefix starts the line a revoked IMAP session gets.
const revokedByePrefix = "* BYE Your credential was revoked."

// revokeIdle is a raw IMAP session through kanmon, left in IDLE.
type revokeIdle struct {
	t    *testing.T
	conn *tls.Conn
	br   *bufio.Reader
}

// openRevokeIdle connects to addr (implicit TLS), sends ID, logs in, selects
// INBOX and enters IDLE.
func openRevokeIdle(t *testing.T, addr string, cfg *tls.Config, user, secret string) *revokeIdle {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &revokeIdle{t: t, conn: conn, br: bufio.NewReader(conn)}
	s.expect("* OK ")
	s.command(`a0 ID ("name" "e2e-client" "version" "7.1")`)
	if r := s.command("a1 LOGIN " + user + " " + secret); !strings.HasPrefix(r, "OK") {
		t.Fatalf("login %s: %s", user, r)
	}
	if r := s.command("a2 SELECT INBOX"); !strings.HasPrefix(r, "OK") {
		t.Fatalf("SELECT: %s", r)
	}
	s.send("a3 IDLE")
	s.expect("+ ")
	return s
}

func (s *revokeIdle) send(line string) {
	s.t.Helper()
	_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(s.conn, line+"\r\n"); err != nil {
		s.t.Fatalf("C: %s: %v", line, err)
	}
}

func (s *revokeIdle) line() string {
	s.t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := s.br.ReadString('\n')
	if err != nil {
		s.t.Fatalf("reading: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// expect reads lines until one starts with prefix.
func (s *revokeIdle) expect(prefix string) string {
	s.t.Helper()
	for {
		if l := s.line(); strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

// command sends a tagged command and returns the tagged reply's text.
func (s *revokeIdle) command(line string) string {
	s.t.Helper()
	tag, _, _ := strings.Cut(line, " ")
	s.send(line)
	return strings.TrimPrefix(s.expect(tag+" "), tag+" ")
}

// bye reads up to the "* BYE" line and returns it without its CRLF.
// Dovecot may push an untagged status into IDLE at any time ("* OK Still
// here" comes at a per-user offset of imap_idle_notify_interval), so any
// other untagged line before it is skipped; anything else is fatal.
func (s *revokeIdle) bye() string {
	s.t.Helper()
	for {
		l := s.line()
		if strings.HasPrefix(l, "* BYE") {
			return l
		}
		if !strings.HasPrefix(l, "* ") {
			s.t.Fatalf("want an untagged BYE, got %q", l)
		}
	}
}

// revoked checks that the session gets the revocation BYE and then the
// end of the connection, within a second of start.
func (s *revokeIdle) revoked(start time.Time) {
	s.t.Helper()
	if l := s.bye(); !strings.HasPrefix(l, revokedByePrefix) {
		s.t.Fatalf("want %q…, got %q", revokedByePrefix, l)
	}
	rest, err := s.br.ReadString('\n')
	if rest != "" || (err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET)) {
		s.t.Fatalf("after the BYE: %q, %v (want the end of the connection)", rest, err)
	}
	if err == nil {
		s.t.Fatal("the connection stayed open after the BYE")
	}
	if d := time.Since(start); d > time.Second {
		s.t.Errorf("the revoked session ended %v after the reload, want < 1s", d)
	}
}

// stillUp checks that a session in IDLE gets a new message's EXISTS and
// answers commands after DONE.
func (s *revokeIdle) stillUp(deliver func()) {
	s.t.Helper()
	deliver()
	for l := s.expect("* "); !strings.HasSuffix(l, " EXISTS"); l = s.expect("* ") {
	}
	s.send("DONE")
	if r := strings.TrimPrefix(s.expect("a3 "), "a3 "); !strings.HasPrefix(r, "OK") {
		s.t.Fatalf("IDLE end: %s", r)
	}
	if r := s.command("a4 NOOP"); !strings.HasPrefix(r, "OK") {
		s.t.Fatalf("NOOP: %s", r)
	}
}

// Revoke + reload against the real Dovecot: an open IDLE session on the
// revoked passcode gets "* BYE" and is closed within a second; the
// session on the account's other passcode stays up and keeps getting
// Dovecot's pushes.
func TestE2ERevokeClosesIdleSession(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	k := w.kanmon
	a := openRevokeIdle(t, k.IMAPS, k.ClientTLS, "alice", k.Passcode("alice", "Thunderbird"))
	b := openRevokeIdle(t, k.IMAPS, k.ClientTLS, "alice", k.Passcode("alice", "Cybozu"))
	if n := len(k.Server.Sessions()); n != 2 {
		t.Fatalf("%d sessions registered, want 2", n)
	}

	k.RevokePasscode(t, "alice", "Thunderbird")
	start := time.Now()
	if n := k.Reload(t); n != 1 {
		t.Errorf("reload closes %d sessions, want 1", n)
	}
	a.revoked(start)
	b.stillUp(func() {
		w.dovecot.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "after revoke", "still here"))
	})
	if s := k.Server.Sessions(); len(s) != 1 || s[0].App != "Cybozu" {
		t.Errorf("sessions after the revocation: %+v", s)
	}
}

// revokeServer is `kanmon serve` running as a subprocess.
type revokeServer struct {
	cfg, dir, imaps string
	tls             *tls.Config
	cmd             *exec.Cmd
	done            chan struct{} // closed when the process has exited
	err             error         // its exit, once done is closed
	log             *bytes.Buffer // read it only once done is closed
}

// startRevokeServer writes a config for dc into a temp dir and starts `kanmon
// serve` on it; setup runs the CLI first (2fa enable, passcode add).
func startRevokeServer(t *testing.T, bin string, dc *dovecottest.Server, setup func(cfg string)) *revokeServer {
	t.Helper()
	dir := t.TempDir()
	cert, err := selfsigned.New("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cert.WriteFiles(dir, "cert.pem", "key.pem"); err != nil {
		t.Fatal(err)
	}
	p := &revokeServer{dir: dir, cfg: filepath.Join(dir, "kanmon.toml"), imaps: freePort(t),
		tls: &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1"}, done: make(chan struct{}), log: &bytes.Buffer{}}
	writeFile(t, p.cfg, fmt.Sprintf(`state_dir = "state"
accounts  = "accounts.toml"
trusted_networks = ["127.0.0.1/32"]
require_2fa_outside = true

[tls]
cert = "cert.pem"
key  = "key.pem"

[[listener]]
protocol = "imap"
address  = %q
tls      = "implicit"

[backend.imap]
address = %q
tls = "none"
master_user = %q
master_password = %q
`, p.imaps, dc.IMAPAddr, masterUser, masterPassword))
	setup(p.cfg)
	p.cmd = exec.Command(bin, "serve", "-config", p.cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("kanmon serve log:\n%s", p.log.String())
		}
	})
	waitFor(t, 10*time.Second, "kanmon serve to listen", func() bool {
		c, err := net.Dial("tcp", p.imaps)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *revokeServer) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("kanmon serve after SIGTERM: %v", p.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("kanmon serve did not exit after SIGTERM")
	}
}

var revokePasscodeRE = regexp.MustCompile(`(?m)^\s+([A-Z]{4} [A-Z]{4} [A-Z]{4} [A-Z]{4})$`)

// revokeAddPasscode runs `kanmon passcode add` and returns the passcode.
func revokeAddPasscode(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out := mustRun(t, bin, append([]string{"passcode", "add"}, args...)...)
	m := revokePasscodeRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("passcode add printed no passcode:\n%s", out)
	}
	return strings.ReplaceAll(m[1], " ", "")
}

// The admin's view through the CLI of a real `kanmon serve`: `kanmon
// sessions` lists an IDLE session, `passcode list` shows the passcodes'
// last use (asked from the server, then read from the file once it has
// stopped) and scope, a scoped passcode is refused outside its scope, and
// `passcode revoke` + `kanmon reload` close the IDLE session within 1 s.
func TestE2ECLISessionsLastUseAndRevoke(t *testing.T) {
	dc := dovecottest.Start(t, dovecottest.Options{
		Users:      []dovecottest.User{{Name: "alice", Password: alicePassword}},
		MasterUser: masterUser, MasterPassword: masterPassword,
	})
	bin := buildKanmon(t)
	var thunderbird, cybozu, pop3Only string
	p := startRevokeServer(t, bin, dc, func(cfg string) {
		mustRun(t, bin, "2fa", "enable", "-config", cfg, "alice")
		thunderbird = revokeAddPasscode(t, bin, "-config", cfg, "alice", "Thunderbird")
		cybozu = revokeAddPasscode(t, bin, "-config", cfg, "alice", "Cybozu")
		pop3Only = revokeAddPasscode(t, bin, "-config", cfg, "--protocols", "pop3", "alice", "Phone")
	})

	if out := mustRun(t, bin, "sessions", "-config", p.cfg); out != "No live sessions.\n" {
		t.Errorf("sessions before any login: %q", out)
	}
	a := openRevokeIdle(t, p.imaps, p.tls, "alice", thunderbird)
	b := openRevokeIdle(t, p.imaps, p.tls, "alice", cybozu)
	out := mustRun(t, bin, "sessions", "-config", p.cfg)
	for _, want := range []string{"passcode Thunderbird", "passcode Cybozu", "127.0.0.1", "imap", "e2e-client 7.1", "2 live session(s)."} {
		if !strings.Contains(out, want) {
			t.Errorf("kanmon sessions lacks %q:\n%s", want, out)
		}
	}

	// The pop3-only passcode is refused on IMAP like a wrong one.
	c, err := tls.Dial("tcp", p.imaps, p.tls)
	if err != nil {
		t.Fatal(err)
	}
	refused := &revokeIdle{t: t, conn: c, br: bufio.NewReader(c)}
	refused.expect("* OK ")
	if r := refused.command("x1 LOGIN alice " + pop3Only); r != failedReply {
		t.Errorf("pop3-only passcode on IMAP: %q", r)
	}
	c.Close()

	out = mustRun(t, bin, "passcode", "list", "-config", p.cfg)
	if !strings.Contains(out, "Last use: from the running server.") {
		t.Errorf("passcode list did not ask the server:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(l, "Thunderbird"), strings.Contains(l, "Cybozu"):
			if !strings.Contains(l, "127.0.0.1") || !strings.Contains(l, "e2e-client 7.1") || strings.Contains(l, "never") {
				t.Errorf("last use missing: %q", l)
			}
		case strings.Contains(l, "Phone"):
			if !strings.Contains(l, " pop3 ") || !strings.Contains(l, "never") {
				t.Errorf("pop3-only passcode: %q", l)
			}
		}
	}

	mustRun(t, bin, "passcode", "revoke", "-config", p.cfg, "alice", "Thunderbird")
	start := time.Now()
	mustRun(t, bin, "reload", "-config", p.cfg)
	a.revoked(start)
	b.stillUp(func() {
		dc.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "after cli revoke", "still here"))
	})
	out = mustRun(t, bin, "sessions", "-config", p.cfg)
	if strings.Contains(out, "Thunderbird") || !strings.Contains(out, "passcode Cybozu") {
		t.Errorf("sessions after the revocation:\n%s", out)
	}

	b.conn.Close()
	p.stop(t)
	out = mustRun(t, bin, "passcode", "list", "-config", p.cfg)
	if !strings.Contains(out, "(no server running)") {
		t.Errorf("passcode list without a server:\n%s", out)
	}
	if l := revokeLineWith(out, "Cybozu"); !strings.Contains(l, "127.0.0.1") || !strings.Contains(l, "imap") {
		t.Errorf("the last use did not survive the server: %q\n%s", l, out)
	}
	if !strings.Contains(p.log.String(), "session closed: credential revoked") {
		t.Errorf("serve log does not record the revocation")
	}
	for _, secret := range []string{thunderbird, cybozu, pop3Only, masterPassword} {
		if strings.Contains(p.log.String(), secret) {
			t.Errorf("serve log contains a secret")
		}
	}
}

// revokeLineWith returns the first line of s that contains sub.
func revokeLineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
