package proxy_test

// The caps, in-process: max_connections and max_preauth_per_ip refuse a
// connection before the greeting, in each protocol's words;
// max_sessions_per_user_ip refuses a login whose credentials were right,
// closes the backend connection it had opened, and frees its slot when a
// session ends.

import (
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Exact lines of the caps.
const (
	capIMAPTooMany      = "* BYE [UNAVAILABLE] Too many connections; please try again later."
	capPOP3TooMany      = "-ERR [SYS/TEMP] Too many connections; please try again later."
	capSMTPTooMany      = "421 4.7.0 Too many connections; please try again later"
	capIMAPSessionLimit = "NO [LIMIT] Maximum number of connections from user+IP exceeded"
	capPOP3SessionLimit = "-ERR [IN-USE] Maximum number of connections from user+IP exceeded"
	capIMAPGreeting     = "* OK [CAPABILITY ..."
)

// countingForward forwards to target like forwardTo and counts the
// connections it is forwarding right now.
func countingForward(target string, active *atomic.Int64) func(net.Conn) {
	fwd := forwardTo(target)
	return func(c net.Conn) {
		active.Add(1)
		defer active.Add(-1)
		fwd(c)
	}
}

// capsWorld is kanmon with all three protocols: IMAP in front of memimap,
// POP3 in front of the fake, submission in front of nothing (the caps
// refuse before any backend is asked). imapActive and pop3Active count
// the backend connections open.
type capsWorld struct {
	k                      *kanmontest.Kanmon
	passcode               string
	imapActive, pop3Active *atomic.Int64
}

func newCapsWorld(t *testing.T, extra string) *capsWorld {
	t.Helper()
	_, memAddr := kanmontest.StartMemIMAP(t, masterUser, masterPW, map[string]string{"alice": alicePW, "carol": carolPW})
	w := &capsWorld{imapActive: new(atomic.Int64), pop3Active: new(atomic.Int64)}
	imapFwd := startTCPServer(t, countingForward(memAddr, w.imapActive))
	fake := newFakePOP3()
	pop3 := startTCPServer(t, func(c net.Conn) {
		w.pop3Active.Add(1)
		defer w.pop3Active.Add(-1)
		fake.serve(c)
	})
	w.k = kanmontest.Start(t, kanmontest.Options{
		IMAPBackend:       imapFwd.addr,
		POP3Backend:       pop3.addr,
		SubmissionBackend: deadAddr(t),
		MasterUser:        masterUser,
		MasterPassword:    masterPW,
		Passcodes:         map[string][]string{"alice": {app}},
		Extra:             extra,
	})
	w.passcode = w.k.Passcode("alice", app)
	return w
}

// waitCount waits until n holds want.
func waitCount(t *testing.T, what string, n *atomic.Int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, n.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCapMaxConnectionsEveryProtocol(t *testing.T) {
	w := newCapsWorld(t, "max_connections = 2\n")
	// Two connections, one logged in and one not, fill the cap: all
	// listeners count together.
	in := dial(t, w.k.IMAPPlain)
	in.run("S: "+capIMAPGreeting, "C: a1 LOGIN alice "+w.passcode, "S: a1 OK ...")
	pre := dial(t, w.k.POP3Plain)
	pre.run("S: " + pop3Greeting)

	dial(t, w.k.IMAPPlain).run("S: "+capIMAPTooMany, "EOF")
	dialTLS(t, w.k.IMAPS, w.k.ClientTLS).run("S: "+capIMAPTooMany, "EOF")
	dial(t, w.k.POP3Plain).run("S: "+capPOP3TooMany, "EOF")
	dialTLS(t, w.k.POP3S, w.k.ClientTLS).run("S: "+capPOP3TooMany, "EOF")
	dial(t, w.k.SubmissionPlain).run("S: "+capSMTPTooMany, "EOF")
	dialTLS(t, w.k.SubmissionS, w.k.ClientTLS).run("S: "+capSMTPTooMany, "EOF")

	hs := httptest.NewServer(w.k.Metrics.Handler())
	t.Cleanup(hs.Close)
	wantSamples(t, scrape(t, hs.URL+"/metrics"), map[string]float64{
		`kanmon_limit_refusals_total{limit="max_connections",protocol="imap"}`:       2,
		`kanmon_limit_refusals_total{limit="max_connections",protocol="pop3"}`:       2,
		`kanmon_limit_refusals_total{limit="max_connections",protocol="submission"}`: 2,
		`kanmon_connections`: 2,
	})

	// A connection that ends frees its place.
	in.run("C: a2 LOGOUT", "S*: a2 OK ...", "EOF")
	in.conn.Close()
	capWaitFor(t, "the logged-out connection to be released", func() bool {
		c := dial(t, w.k.IMAPPlain)
		defer c.conn.Close()
		return c.line() != capIMAPTooMany
	})
	if got := w.k.Logs(); !logHas(got, `msg="connection refused: too many connections"`, "limit=max_connections") {
		t.Errorf("log lacks the refusal:\n%s", got)
	}
}

func TestCapMaxPreAuthPerIP(t *testing.T) {
	w := newCapsWorld(t, "max_preauth_per_ip = 2\n")
	a := dial(t, w.k.IMAPPlain)
	a.run("S: " + capIMAPGreeting)
	b := dial(t, w.k.POP3Plain)
	b.run("S: " + pop3Greeting)
	dial(t, w.k.IMAPPlain).run("S: "+capIMAPTooMany, "EOF")
	dial(t, w.k.POP3Plain).run("S: "+capPOP3TooMany, "EOF")
	dial(t, w.k.SubmissionPlain).run("S: "+capSMTPTooMany, "EOF")

	// Logging in ends the pre-auth phase: its slot is free at once,
	// though the session goes on.
	a.run("C: a1 LOGIN alice "+w.passcode, "S: a1 OK ...")
	c := dial(t, w.k.IMAPPlain)
	c.run("S: " + capIMAPGreeting)
	dial(t, w.k.IMAPPlain).run("S: "+capIMAPTooMany, "EOF")
	a.run("C: a2 NOOP", "S*: a2 OK ...")
	if got := w.k.Logs(); !logHas(got, "limit=max_preauth_per_ip") {
		t.Errorf("log lacks the refusal:\n%s", got)
	}
}

func TestCapMaxSessionsPerUserIPIMAP(t *testing.T) {
	w := newCapsWorld(t, "max_sessions_per_user_ip = 2\n")
	login := func() *conv {
		c := dial(t, w.k.IMAPPlain)
		c.run("S: "+capIMAPGreeting, "C: a1 LOGIN alice "+w.passcode, "S: a1 OK ...")
		return c
	}
	first, _ := login(), login()
	waitCount(t, "backend connections", w.imapActive, 2)

	// The third is refused after a good login, and its backend
	// connection is closed; the client may log in as someone else.
	third := dial(t, w.k.IMAPPlain)
	third.run("S: "+capIMAPGreeting, "C: b1 LOGIN alice "+w.passcode, "S: b1 "+capIMAPSessionLimit)
	waitCount(t, "backend connections after the refusal", w.imapActive, 2)
	third.run("C: b2 LOGIN carol "+carolPW, "S: b2 OK ...")

	// Another protocol counts apart.
	p := dial(t, w.k.POP3Plain)
	p.run("S: "+pop3Greeting, "C: USER alice", "S: +OK ...", "C: PASS "+w.passcode, "S: +OK Logged in.")

	// A session that ends frees its slot.
	first.run("C: a2 LOGOUT", "S*: a2 OK ...", "EOF")
	first.conn.Close()
	capWaitFor(t, "the slot to be free", func() bool {
		c := dial(t, w.k.IMAPPlain)
		defer c.conn.Close()
		c.run("S: "+capIMAPGreeting, "C: c1 LOGIN alice "+w.passcode)
		return afterTag(c.line()) != capIMAPSessionLimit
	})
	if got := w.k.Logs(); !logHas(got, `msg="login refused: too many sessions for this user from this address"`, "user=alice", "limit=max_sessions_per_user_ip", "max=2") {
		t.Errorf("log lacks the refusal:\n%s", got)
	}
}

func TestCapMaxSessionsPerUserIPPOP3(t *testing.T) {
	w := newCapsWorld(t, "max_sessions_per_user_ip = 1\n")
	first := dial(t, w.k.POP3Plain)
	first.run("S: "+pop3Greeting, "C: USER alice", "S: +OK ...", "C: PASS "+w.passcode, "S: +OK Logged in.")
	waitCount(t, "backend connections", w.pop3Active, 1)
	// The user name is compared as the accounts file does, case-folded.
	second := dial(t, w.k.POP3Plain)
	second.run("S: "+pop3Greeting, "C: USER Alice", "S: +OK ...", "C: PASS "+w.passcode, "S: "+capPOP3SessionLimit)
	waitCount(t, "backend connections after the refusal", w.pop3Active, 1)
	// Another user from the same address is not limited.
	second.run("C: USER carol", "S: +OK ...", "C: PASS "+carolPW, "S: +OK Logged in.")
	waitCount(t, "backend connections", w.pop3Active, 2)
}

// capWaitFor polls cond until it holds, for up to 5 s.
func capWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logHas reports whether s contains every one of subs.
func logHas(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
