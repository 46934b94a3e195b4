package proxy_test

// Reload and revocation, in-process: kanmon (kanmontest) in front of
// memimap, IMAP clients in IDLE, and reloads that revoke a passcode, turn
// 2FA on for a password account, or reset a 2FA account.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// revokedBye is the line a revoked IMAP session gets before the close.
const revokedBye = "* BYE Your credential was revoked. Please sign in again."

// idle logs in over implicit TLS, selects INBOX and enters IDLE.
func (w *world) idle(t *testing.T, user, secret string) *conv {
	t.Helper()
	c := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
	c.run(
		"S: * OK ...",
		"C: a1 LOGIN "+user+" "+secret,
		"S: a1 OK ...",
		"C: a2 SELECT INBOX",
		"S*: a2 OK ...",
		"C: a3 IDLE",
		"S: + ...",
	)
	return c
}

// closedWithBye checks that the session got the revocation BYE and was
// closed, within a second of start.
func closedWithBye(t *testing.T, c *conv, start time.Time) {
	t.Helper()
	c.run("S: "+revokedBye, "EOF")
	if d := time.Since(start); d > time.Second {
		t.Errorf("revoked session closed %v after the reload, want < 1s", d)
	}
}

// stillUp checks that a session in IDLE still works.
func stillUp(c *conv) {
	c.run("C: DONE", "S*: a3 OK ...", "C: a4 NOOP", "S*: a4 OK ...")
}

// apps returns the passcode app names of the live sessions.
func (w *world) sessionApps() []string {
	var apps []string
	for _, s := range w.k.Server.Sessions() {
		apps = append(apps, s.Method+":"+s.App)
	}
	return apps
}

func TestReloadClosesRevokedPasscodeSession(t *testing.T) {
	w := newWorld(t, worldOptions{})
	pcB := w.k.AddPasscode(t, "alice", "iPhone")
	if n := w.k.Reload(t); n != 0 {
		t.Fatalf("adding a passcode closed %d sessions", n)
	}
	a := w.idle(t, "alice", w.passcode)
	b := w.idle(t, "alice", pcB)
	if got := strings.Join(w.sessionApps(), " "); got != "passcode:Thunderbird passcode:iPhone" {
		t.Fatalf("sessions: %s", got)
	}

	w.k.RevokePasscode(t, "alice", app)
	start := time.Now()
	if n := w.k.Reload(t); n != 1 {
		t.Errorf("reload closes %d sessions, want 1", n)
	}
	closedWithBye(t, a, start)
	stillUp(b)
	// The closed session leaves the registry when its relay returns,
	// just after the client saw the close.
	capWaitFor(t, "the revoked session to leave the registry", func() bool {
		return strings.Join(w.sessionApps(), " ") == "passcode:iPhone"
	})
	for _, s := range w.k.Server.Sessions() {
		if s.BytesIn == 0 || s.BytesOut == 0 || s.User != "alice" || s.Protocol != "imap" {
			t.Errorf("session: %+v", s)
		}
	}
	if !strings.Contains(w.k.Logs(), "session closed: credential revoked") {
		t.Error("the log does not say why the session was closed")
	}
	again := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
	again.run("S: * OK ...", "C: a1 LOGIN alice "+w.passcode, "S: a1 "+failedReply)
	noLeak(t, w.k.Logs(), w.passcode, pcB)
}

func TestReloadTwoFAOnClosesPasswordSessions(t *testing.T) {
	w := newWorld(t, worldOptions{})
	carol := w.idle(t, "carol", carolPW)
	alice := w.idle(t, "alice", w.passcode)
	if got := strings.Join(w.sessionApps(), " "); !strings.Contains(got, "passthrough:") {
		t.Fatalf("sessions: %s", got)
	}
	w.k.EnableTwoFA(t, "carol")
	start := time.Now()
	w.k.Reload(t)
	closedWithBye(t, carol, start)
	stillUp(alice)
}

func TestReloadTwoFAResetClosesPasscodeSessions(t *testing.T) {
	w := newWorld(t, worldOptions{})
	pcB := w.k.AddPasscode(t, "alice", "iPhone")
	w.k.Reload(t)
	a := w.idle(t, "alice", w.passcode)
	b := w.idle(t, "alice", pcB)
	carol := w.idle(t, "carol", carolPW)
	w.k.DisableTwoFA(t, "alice")
	start := time.Now()
	if n := w.k.Reload(t); n != 2 {
		t.Errorf("reload closes %d sessions, want 2", n)
	}
	closedWithBye(t, a, start)
	closedWithBye(t, b, start)
	stillUp(carol)
}

// A client that connected before the reload and logs in after it with
// the passcode the reload revoked: its connection still carries the old
// configuration, but the session registry closes it as soon as it begins.
func TestLoginOnOldConfigurationAfterRevocation(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
	c.run("S: * OK ...")
	w.k.RevokePasscode(t, "alice", app)
	w.k.Reload(t)
	c.run("C: a1 LOGIN alice "+w.passcode, "S: a1 OK ...", "S: "+revokedBye, "EOF")
}

func TestPasscodeLastUse(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
	before := time.Now().Add(-time.Second)
	c.run(
		"S: * OK ...",
		`C: a0 ID ("name" "Thunderbird" "version" "128.3.1")`,
		"S*: a0 OK ...",
		"C: a1 LOGIN alice "+w.passcode,
		"S: a1 OK ...",
	)
	accts, err := auth.LoadAccounts(filepath.Join(w.k.Dir, "accounts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	id := accts.Lookup("alice").Passcode(app).ID()
	uses, err := w.k.Server.LastUse()
	if err != nil {
		t.Fatal(err)
	}
	u, ok := uses[id]
	if !ok {
		t.Fatalf("no last use for the passcode: %+v", uses)
	}
	if u.User != "alice" || u.App != app || u.Protocol != "imap" || u.ClientIP != "127.0.0.1" || u.Client != "Thunderbird 128.3.1" || u.Time.Before(before) {
		t.Errorf("last use: %+v", u)
	}
	// The session is registered when the relay starts, just after the
	// client has its OK.
	capWaitFor(t, "the session to be listed", func() bool { return len(w.k.Server.Sessions()) == 1 })
	if s := w.k.Server.Sessions(); len(s) != 1 || s[0].Client != "Thunderbird 128.3.1" {
		t.Errorf("sessions: %+v", s)
	}
	// Revoked: the record goes with the passcode at the reload.
	w.k.RevokePasscode(t, "alice", app)
	w.k.Reload(t)
	if uses, _ := w.k.Server.LastUse(); len(uses) != 0 {
		t.Errorf("last use of a revoked passcode kept: %+v", uses)
	}
}

func TestPasscodeProtocolScope(t *testing.T) {
	w := newWorld(t, worldOptions{})
	pop3Only := w.k.AddScopedPasscode(t, "alice", "Cybozu", "pop3")
	imapToo := w.k.AddScopedPasscode(t, "alice", "Roundcube", "imap", "submission")
	w.k.Reload(t)
	c := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
	c.run("S: * OK ...", "C: a1 LOGIN alice "+pop3Only, "S: a1 "+failedReply)
	c.run("C: a2 LOGIN alice "+imapToo, "S: a2 OK ...")
	logs := w.k.Logs()
	if !strings.Contains(logs, auth.ReasonOutOfScope.String()) || !strings.Contains(logs, "app=Cybozu") {
		t.Errorf("the log does not say the passcode was used outside its scope:\n%s", logs)
	}
	noLeak(t, logs, pop3Only, imapToo)
}
