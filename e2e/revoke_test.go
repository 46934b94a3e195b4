package e2e

import (
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// revokedByePrefix starts the line a revoked IMAP session gets.
const revokedByePrefix = "* BYE Your credential was revoked."

// revokeIdle is a raw IMAP session through kanmon, left in IDLE.
type revokeIdle struct{ lineConn }

// openRevokeIdle connects to addr (implicit TLS), sends ID, logs in, selects
// INBOX and enters IDLE.
func openRevokeIdle(t *testing.T, addr string, cfg *tls.Config, user, secret string) *revokeIdle {
	t.Helper()
	s := &revokeIdle{dialLine(t, addr, cfg)}
	s.expect("* OK ")
	s.command(`a0 ID ("name" "e2e-client" "version" "7.1")`)
	if r := s.command("a1 LOGIN " + user + " " + secret); !strings.HasPrefix(r, "OK") {
		t.Fatalf("login %s: %s", user, r)
	}
	if r := s.command("a2 SELECT INBOX"); !strings.HasPrefix(r, "OK") {
		t.Fatalf("SELECT: %s", r)
	}
	s.writeLine("a3 IDLE")
	s.expect("+ ")
	return s
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
	s.writeLine(line)
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
	s.writeLine("DONE")
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

// revokeServer is `kanmon serve` running as a subprocess on its config
// directory.
type revokeServer struct {
	*kanmontest.Files
	*serveProcess
}

// startRevokeServer writes a config for dc with opts (serveFiles) and
// starts `kanmon serve` on it; setup runs the CLI first (2fa enable,
// passcode add).
func startRevokeServer(t *testing.T, bin string, dc *dovecottest.Server, opts kanmontest.Options, setup func(cfg string)) *revokeServer {
	t.Helper()
	f := serveFiles(t, dc, opts)
	setup(f.ConfigPath)
	return &revokeServer{Files: f, serveProcess: startServe(t, bin, f.ConfigPath, f.IMAPS)}
}

// The admin's view through the CLI of a real `kanmon serve`: `kanmon
// sessions` lists an IDLE session, `passcode list` shows the passcodes'
// last use (asked from the server, then read from the file once it has
// stopped) and scope, a scoped passcode is refused outside its scope, and
// `passcode revoke` + `kanmon reload` close the IDLE session within 1 s.
func TestE2ECLISessionsLastUseAndRevoke(t *testing.T) {
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	bin := buildKanmon(t)
	var thunderbird, cybozu, pop3Only string
	p := startRevokeServer(t, bin, dc, kanmontest.Options{}, func(cfg string) {
		mustRun(t, bin, "2fa", "enable", "-config", cfg, "alice")
		thunderbird = cliAddPasscode(t, bin, "-config", cfg, "alice", "Thunderbird")
		cybozu = cliAddPasscode(t, bin, "-config", cfg, "alice", "Cybozu")
		pop3Only = cliAddPasscode(t, bin, "-config", cfg, "--protocols", "pop3", "alice", "Phone")
	})

	if out := mustRun(t, bin, "sessions", "-config", p.ConfigPath); out != "No live sessions.\n" {
		t.Errorf("sessions before any login: %q", out)
	}
	a := openRevokeIdle(t, p.IMAPS, p.ClientTLS, "alice", thunderbird)
	b := openRevokeIdle(t, p.IMAPS, p.ClientTLS, "alice", cybozu)
	out := mustRun(t, bin, "sessions", "-config", p.ConfigPath)
	for _, want := range []string{"passcode Thunderbird", "passcode Cybozu", "127.0.0.1", "imap", "e2e-client 7.1", "2 live session(s)."} {
		if !strings.Contains(out, want) {
			t.Errorf("kanmon sessions lacks %q:\n%s", want, out)
		}
	}

	// The pop3-only passcode is refused on IMAP like a wrong one.
	refused := &revokeIdle{dialLine(t, p.IMAPS, p.ClientTLS)}
	refused.expect("* OK ")
	if r := refused.command("x1 LOGIN alice " + pop3Only); r != failedReply {
		t.Errorf("pop3-only passcode on IMAP: %q", r)
	}
	refused.conn.Close()

	out = mustRun(t, bin, "passcode", "list", "-config", p.ConfigPath)
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

	mustRun(t, bin, "passcode", "revoke", "-config", p.ConfigPath, "alice", "Thunderbird")
	start := time.Now()
	mustRun(t, bin, "reload", "-config", p.ConfigPath)
	a.revoked(start)
	b.stillUp(func() {
		dc.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "after cli revoke", "still here"))
	})
	out = mustRun(t, bin, "sessions", "-config", p.ConfigPath)
	if strings.Contains(out, "Thunderbird") || !strings.Contains(out, "passcode Cybozu") {
		t.Errorf("sessions after the revocation:\n%s", out)
	}

	b.conn.Close()
	p.stop(t)
	out = mustRun(t, bin, "passcode", "list", "-config", p.ConfigPath)
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
