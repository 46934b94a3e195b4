package proxy_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A client that keeps sending NOOP is still let go at preauth_lifetime:
// the idle timeout restarts with each command, the lifetime does not.
func TestSiegePreAuthLifetime(t *testing.T) {
	w := newCapsWorld(t, "preauth_timeout = \"1s\"\npreauth_lifetime = \"2s\"\n")
	c := dial(t, w.k.IMAPPlain)
	start := time.Now()
	c.run("S: " + capIMAPGreeting)
	// A NOOP after every 200 ms of silence keeps the idle timeout from
	// striking; the lifetime ends the session anyway. Waiting for a line
	// between NOOPs catches the goodbye before a write could meet a
	// closed connection.
	const bye = "* BYE Autologout; idle for too long."
	for i := 0; ; i++ {
		_ = c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		l, err := c.br.ReadString('\n')
		_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
		if err == nil {
			if l != bye+"\r\n" {
				t.Fatalf("unasked line %q", l)
			}
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("still open after 5s")
		}
		c.write(fmt.Sprintf("n%d NOOP\r\n", i))
		if l := c.line(); l == bye {
			break
		} else if l != fmt.Sprintf("n%d OK NOOP completed.", i) {
			t.Fatalf("NOOP %d: %q", i, l)
		}
	}
	c.expectEOF()
	if d := time.Since(start); d < 1900*time.Millisecond || d > 4*time.Second {
		t.Errorf("let go after %v, want about the 2s lifetime", d)
	}
}

// Outside trusted_networks one prefix (a /24 here) holds at most
// max_preauth_per_prefix connections not logged in yet, over all its
// addresses; another prefix, and the campus, are not held back by it.
func TestSiegePreAuthPerPrefix(t *testing.T) {
	w := newCapsWorld(t, "max_preauth_per_ip = 2\nmax_preauth_per_prefix = 5\n")
	open := func(ip string) string {
		c := newConv(t, dialFrom(t, ip, w.k.IMAPPlain))
		return c.line()
	}
	for i := range 5 {
		if got := open(fmt.Sprintf("127.0.5.%d", 1+i/2)); !lineMatches(got, capIMAPGreeting) {
			t.Fatalf("connection %d in 127.0.5.0/24: %q", i, got)
		}
	}
	if got := open("127.0.5.9"); got != capIMAPTooMany {
		t.Errorf("a sixth connection in 127.0.5.0/24: %q, want the refusal", got)
	}
	if got := open("127.0.6.1"); !lineMatches(got, capIMAPGreeting) {
		t.Errorf("another /24: %q", got)
	}
	for range 2 {
		if got := open("127.0.0.1"); !lineMatches(got, capIMAPGreeting) {
			t.Errorf("the campus: %q", got)
		}
	}
	wantLog(t, w.k, "limit=max_preauth_per_prefix")
}

// Once unknown addresses have taken all but reserved_connections of
// max_connections, only the campus and addresses known-good for some
// account get in.
func TestSiegeReserve(t *testing.T) {
	w := newCapsWorld(t, "max_connections = 10\nreserved_connections = 3\n")
	// alice logs in once from 127.0.8.1: that address is known-good.
	c := newConv(t, dialFrom(t, "127.0.8.1", w.k.IMAPPlain))
	c.run("S: "+capIMAPGreeting, "C: a1 LOGIN alice "+w.passcode, "S: a1 OK ...", "C: a2 LOGOUT", "S*: a2 OK ...", "EOF")
	c.conn.Close()
	capWaitFor(t, "alice's session to end", func() bool { return len(w.k.Server.Sessions()) == 0 })
	open := func(ip string) string { return newConv(t, dialFrom(t, ip, w.k.IMAPPlain)).line() }
	for i := range 7 {
		if got := open(fmt.Sprintf("127.0.7.%d", 1+i)); !lineMatches(got, capIMAPGreeting) {
			t.Fatalf("unknown address %d: %q", i, got)
		}
	}
	if got := open("127.0.9.1"); got != capIMAPTooMany {
		t.Errorf("an unknown address with only the reserve left: %q", got)
	}
	if got := open("127.0.8.1"); !lineMatches(got, capIMAPGreeting) {
		t.Errorf("alice's known-good address: %q", got)
	}
	if got := open("127.0.0.1"); !lineMatches(got, capIMAPGreeting) {
		t.Errorf("the campus: %q", got)
	}
	wantLog(t, w.k, "limit=reserved_connections")
}

// Stress mode: when connections not logged in yet reach the threshold,
// their timeouts shorten, for those already waiting too; it is logged
// once on entry and once on exit, and shown by kanmon_stress_mode.
func TestSiegeStressMode(t *testing.T) {
	w := newCapsWorld(t, "max_connections = 20\nstress_threshold_percent = 50\nstress_preauth_timeout = \"1s\"\nstress_preauth_lifetime = \"2s\"\n")
	hs := httptest.NewServer(w.k.Metrics.Handler())
	t.Cleanup(hs.Close)
	var idle []*conv
	for i := range 9 {
		c := newConv(t, dialFrom(t, fmt.Sprintf("127.0.10.%d", 1+i), w.k.IMAPPlain))
		c.run("S: " + capIMAPGreeting)
		idle = append(idle, c)
	}
	if strings.Contains(w.k.Logs(), "stress mode on") {
		t.Fatal("stress mode below the threshold")
	}
	start := time.Now()
	last := newConv(t, dialFrom(t, "127.0.10.10", w.k.IMAPPlain))
	last.run("S: " + capIMAPGreeting)
	wantSamples(t, scrape(t, hs.URL+"/metrics"), map[string]float64{"kanmon_stress_mode": 1, "kanmon_preauth_connections": 10})
	for _, c := range append(idle, last) {
		c.run("S: * BYE Autologout; idle for too long.", "EOF")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the waiting connections were let go after %v, want about the 1s stress timeout (not the 60s one)", d)
	}
	capWaitFor(t, "stress mode to end", func() bool { return strings.Contains(w.k.Logs(), "stress mode off") })
	if n := strings.Count(w.k.Logs(), "stress mode on"); n != 1 {
		t.Errorf("stress mode logged on %d times, want 1", n)
	}
	wantSamples(t, scrape(t, hs.URL+"/metrics"), map[string]float64{"kanmon_stress_mode": 0})
}
