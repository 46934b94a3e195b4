package proxy_test

// Hardening, leaks: every test of the package ends with the goroutines
// back to baseline (goleak.VerifyTestMain), and a representative run of
// whole sessions of each protocol leaves neither goroutines nor file
// descriptors behind once kanmon and its backends have stopped.

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions()...)
}

// leakOptions are the goroutines allowed to outlive a test: none of
// kanmon's own.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		// The fuzzing engine's coordinator, when run with -fuzz.
		goleak.IgnoreTopFunction("internal/fuzz.(*worker).coordinate"),
	}
}

// findLeaks looks for goroutines started since baseline, for up to
// ioTimeout: a connection's goroutines end a moment after it closes.
func findLeaks(baseline goleak.Option) error {
	deadline := time.Now().Add(ioTimeout)
	for {
		err := goleak.Find(append(leakOptions(), baseline)...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// fdList lists the open file descriptors and what they are.
func fdList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "%s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// waitFDs waits until at most want descriptors are open, and fails with
// the list when they do not drop that far within the timeout. It runs the
// GC while it waits: the pipes the runtime keeps for splice(2) are closed
// only once collected.
func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	n := openFDs(t)
	for n > want && time.Now().Before(deadline) {
		// splice(2) pipes wait in a sync.Pool until a GC frees them.
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
		n = openFDs(t)
	}
	if n > want {
		t.Errorf("%d file descriptors open after the sessions ended, %d before:\n%s", n, want, fdList())
	}
}

// After logins, relayed sessions, failed logins and pre-auth connections
// of every protocol, and kanmon's shutdown, no goroutine and no file
// descriptor is left.
func TestHardeningNoLeaks(t *testing.T) {
	baseFDs := openFDs(t)
	baseline := goleak.IgnoreCurrent()
	t.Run("imap", func(t *testing.T) {
		w := newWorld(t, worldOptions{})
		c := dial(t, w.k.IMAPPlain)
		c.run(
			"S: * OK [CAPABILITY ...",
			"C: a0 LOGIN alice WRONGWRONGWRONGW",
			"S: a0 "+failedReply,
			"C: a1 LOGIN alice "+w.passcode,
			"S: a1 OK [CAPABILITY ...",
			"C: a2 SELECT INBOX",
			"S*: a2 OK [READ-WRITE] ...",
			"C: a3 LOGOUT",
			"S*: a3 OK ...",
			"EOF",
		)
		tc := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
		tc.run("S: * OK [CAPABILITY ...", "C: a1 AUTHENTICATE PLAIN "+plainIR("", "carol", carolPW), "S: a1 OK ...")
		idle := dial(t, w.k.IMAPStartTLS) // left open: shutdown ends it
		idle.run("S: * OK [CAPABILITY ...")
	})
	t.Run("pop3", func(t *testing.T) {
		w := newPOP3World(t, worldOptions{})
		c := dial(t, w.k.POP3Plain)
		c.run("S: "+pop3Greeting, "C: AUTH PLAIN "+plainIR("", "alice", w.passcode), "S: +OK Logged in.")
		expectPOP3Session(t, w, c, "alice")
		tc := dialTLS(t, w.k.POP3S, w.k.ClientTLS)
		tc.run("S: "+pop3Greeting, "C: USER carol", "S: +OK ...", "C: PASS wrong-pw", "S: "+pop3Failed)
		idle := dial(t, w.k.POP3StartTLS)
		idle.run("S: " + pop3Greeting)
	})
	t.Run("submission", func(t *testing.T) {
		w := newSMTPWorld(t, worldOptions{})
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.smtpLogin("alice", w.passcode)
		expectSMTPSession(t, w, c, "alice")
		tc := dialTLS(t, w.k.SubmissionS, w.k.ClientTLS)
		tc.run(smtpGreeting)
		tc.smtpLogin("carol", carolPW) // left logged in: shutdown ends it
		idle := dialSMTP(t, w.k.SubmissionStartTLS)
		idle.ehlo("client.example.org")
	})
	// The subtests' cleanups stopped kanmon and the backends and closed
	// the clients.
	if err := findLeaks(baseline); err != nil {
		t.Errorf("goroutines left after the sessions ended:\n%v", err)
	}
	waitFDs(t, baseFDs)
}
