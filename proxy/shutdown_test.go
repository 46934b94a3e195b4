package proxy_test

import (
	"net"
	"testing"
	"time"
)

// shutdownBye is the last line of an IMAP session at shutdown.
const shutdownBye = "* BYE Server shutting down."

// Shutdown as SIGTERM runs it, in-process: once the listeners close, the
// sessions that have not logged in are told so and closed at once, while
// a logged-in IMAP session in IDLE drains: it goes on working until the
// drain ends (CloseSessions), and then gets "* BYE Server shutting down."
// before the close.
func TestShutdownClosesPreAuthAtOnceAndDrainsSessions(t *testing.T) {
	w := newCapsWorld(t, "")
	idle := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
	idle.run(
		"S: "+capIMAPGreeting,
		"C: a1 LOGIN alice "+w.passcode,
		"S: a1 OK ...",
		"C: a2 SELECT INBOX",
		"S*: a2 OK ...",
		"C: a3 IDLE",
		"S: + ...",
	)
	imapPre := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
	imapPre.run("S: " + capIMAPGreeting)
	pop3Pre := dial(t, w.k.POP3Plain)
	pop3Pre.run("S: " + pop3Greeting)
	// Mid-command: a literal announced, its bytes not yet sent.
	literal := dial(t, w.k.IMAPPlain)
	literal.run("S: "+capIMAPGreeting, "C: x1 LOGIN {5}", "S: + Ready for literal data")

	start := time.Now()
	w.k.StopAccepting()
	imapPre.run("S: "+shutdownBye, "EOF")
	pop3Pre.run("S: -ERR Server shutting down.", "EOF")
	literal.run("S: "+shutdownBye, "EOF")
	if d := time.Since(start); d > time.Second {
		t.Errorf("sessions not logged in were closed %v after shutdown began, want at once", d)
	}
	if c, err := net.DialTimeout("tcp", w.k.IMAPPlain, time.Second); err == nil {
		c.Close()
		t.Error("a listener still accepts after shutdown began")
	}

	// The drain: the session in IDLE still works.
	idle.run("C: DONE", "S*: a3 OK ...", "C: a4 NOOP", "S*: a4 OK ...", "C: a5 IDLE", "S: + ...")
	if n := len(w.k.Server.Sessions()); n != 1 {
		t.Fatalf("%d sessions during the drain, want 1", n)
	}

	start = time.Now()
	if n := w.k.Server.CloseSessions(); n != 1 {
		t.Errorf("CloseSessions closes %d sessions, want 1", n)
	}
	idle.run("S: "+shutdownBye, "EOF")
	done := make(chan struct{})
	go func() { w.k.Server.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Server.Wait did not return after CloseSessions")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the drained session ended %v after CloseSessions, want < 1s", d)
	}
	logs := w.k.Logs()
	if !logHas(logs, `msg="session closed: server shutting down"`, "bye=true", "shutdown=true") {
		t.Errorf("log lacks the shutdown of the session:\n%s", logs)
	}
}
