package e2e

// Hardening, leaks, end to end: every test of the package ends with the
// goroutines back to baseline (goleak.VerifyTestMain), and whole sessions
// of each protocol through kanmon to a real Dovecot leave neither
// goroutines nor file descriptors behind once everything has stopped.

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/goleak"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// TestMain fails the package when a goroutine outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
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

func TestE2EHardeningNoLeaks(t *testing.T) {
	baseFDs := openFDs(t)
	baseline := goleak.IgnoreCurrent()
	t.Run("sessions", func(t *testing.T) {
		w := startSubmissionWorld(t)
		k := w.kanmon
		pc := k.Passcode("alice", "Thunderbird")
		// IMAP: a passcode session and a refused login.
		c := dialClient(t, k, "alice", pc, nil)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if err := c.Logout().Wait(); err != nil {
			t.Fatal(err)
		}
		wantFailed(t, "alice's account password", loginFrom(t, k, "127.0.0.1", "alice", alicePassword))
		// Submission: a message sent with the passcode.
		sc, err := smtp.DialTLS(k.SubmissionS, k.ClientTLS)
		if err != nil {
			t.Fatal(err)
		}
		sendAsAlice(t, sc, pc, uniqueSubject("leak check"))
		// A client that connects and says nothing, left to shutdown.
		dialRaw(t, k)
	})
	t.Run("pop3", func(t *testing.T) {
		w := startPOP3World(t, 0, kanmontest.Options{})
		p := dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
		if got := p.login("alice", w.kanmon.Passcode("alice", "Cybozu")); !strings.HasPrefix(got, "+OK") {
			t.Fatalf("POP3 login: %s", got)
		}
		p.ok("STAT")
		p.ok("QUIT")
	})
	// The subtests' cleanups stopped kanmon and Dovecot and closed the
	// clients.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(baseline)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines left after the sessions ended:\n%v", err)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for n := openFDs(t); n > baseFDs; n = openFDs(t) {
		runtime.GC() // splice(2) pipes are closed only once collected
		if time.Now().After(deadline) {
			t.Errorf("%d file descriptors open after the sessions ended, %d before", n, baseFDs)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}
