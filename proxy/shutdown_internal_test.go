package proxy

import (
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/config"
)

// CloseSessions, as the end of the drain after SIGTERM: every live
// session goes at once, an IMAP client with "* BYE Server shutting down."
// (where the stream allows it), a POP3 client without a line; a session
// that starts relaying afterwards is closed as soon as it does.
func TestCloseSessionsSaysByeAndClosesLateComers(t *testing.T) {
	w := newRegWorld(t)
	a := w.start("imap", "alice", w.codes["A"], nil)
	mid := w.start("imap", "alice", w.codes["B"], nil)
	c := w.start("pop3", "carol", "carol-pw", nil)
	waitSessions(t, w.srv, 3)
	a.roundTrip(t, "+ idling\r\n", "")
	// mid is inside a response: a BYE would corrupt it.
	mid.roundTrip(t, "* 1 FETCH (BODY[] {10}\r\n01234", "")

	start := time.Now()
	if n := w.srv.CloseSessions(); n != 3 {
		t.Errorf("CloseSessions closes %d sessions, want 3", n)
	}
	if got := a.rest(t); got != dialectOf(config.ProtocolIMAP).shutdownBye {
		t.Errorf("IMAP client got %q, want %q", got, dialectOf(config.ProtocolIMAP).shutdownBye)
	}
	if got := mid.rest(t); got != "" {
		t.Errorf("IMAP client inside a literal got %q, want nothing", got)
	}
	if got := c.rest(t); got != "" {
		t.Errorf("POP3 client got %q, want nothing", got)
	}
	waitSessions(t, w.srv, 0)
	if d := time.Since(start); d > time.Second {
		t.Errorf("sessions closed %v after CloseSessions, want < 1s", d)
	}

	late := w.start("imap", "alice", w.codes["D"], nil)
	if got := late.rest(t); got != dialectOf(config.ProtocolIMAP).shutdownBye {
		t.Errorf("session started after CloseSessions got %q, want the BYE", got)
	}
	waitSessions(t, w.srv, 0)
}

// The scrape's view of the registry: sessions by protocol, and relayed
// bytes that count the live sessions and keep those of ended ones.
func TestStatsCountSessionsAndBytes(t *testing.T) {
	w := newRegWorld(t)
	a := w.start("imap", "alice", w.codes["A"], nil)
	c := w.start("pop3", "carol", "carol-pw", nil)
	waitSessions(t, w.srv, 2)
	a.roundTrip(t, "* OK hello\r\n", "a1 NOOP\r\n") // 12 out, 9 in
	c.roundTrip(t, "+OK\r\n", "STAT\r\n")           // 5 out, 6 in
	want := func(proto string, sessions int, in, out int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := w.srv.stats()
			if st.Sessions[proto] == sessions && st.BytesIn[proto] == in && st.BytesOut[proto] == out {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: stats %+v, want %d sessions, %d bytes in, %d out", proto, st, sessions, in, out)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	want("imap", 1, 9, 12)
	want("pop3", 1, 6, 5)
	a.client.Close()
	a.backend.Close()
	want("imap", 0, 9, 12) // ended, its bytes kept
	b := w.start("imap", "alice", w.codes["B"], nil)
	b.roundTrip(t, "* OK\r\n", "b NOOP\r\n") // 6 out, 8 in
	want("imap", 1, 17, 18)
}
