package proxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// Greeting and CAPA on each kind of listener, and the commands that need
// no login.
func TestPOP3GreetingAndCapa(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	authCaps := []string{"RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN LOGIN"}
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) *conv
	}{
		{"implicit TLS", func(t *testing.T) *conv { return dialTLS(t, w.k.POP3S, w.k.ClientTLS) }},
		{"plain loopback", func(t *testing.T) *conv { return dial(t, w.k.POP3Plain) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.dial(t)
			c.run("S: " + pop3Greeting)
			c.run(pop3Capa(authCaps...)...)
			c.run(
				"C: noop",
				"S: +OK",
				"C: STLS",
				"S: -ERR STLS is not available here.",
				"C: AUTH",
				"S: +OK",
				"S: PLAIN",
				"S: LOGIN",
				"S: .",
				"C: QUIT",
				"S: +OK Logging out.",
				"EOF",
			)
		})
	}
	t.Run("STLS", func(t *testing.T) {
		c := dial(t, w.k.POP3StartTLS)
		c.run("S: " + pop3Greeting)
		c.run(pop3Capa("RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS")...)
		c.run(
			"C: STLS now",
			"S: -ERR STLS takes no arguments.",
			"C: stls",
			"S: +OK Begin TLS negotiation now.",
		)
		c.startTLS(w.k.ClientTLS)
		c.run(pop3Capa(authCaps...)...)
		c.run(
			"C: STLS",
			"S: -ERR STLS is not available here.",
			"C: USER alice",
			"S: +OK Send your password.",
			"C: PASS "+w.passcode,
			"S: +OK Logged in.",
		)
		expectPOP3Session(t, w, c, "alice")
	})
}

// Every way of presenting alice's passcode logs her in and reaches the
// backend's mailbox.
func TestPOP3LoginWithPasscode(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	pc := w.passcode
	spaced := strings.ToLower(auth.FormatPasscode(pc)) // "abcd efgh ijkl mnop"
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"USER PASS", []string{"C: USER alice", "S: +OK Send your password.", "C: PASS " + pc}},
		{"PASS lower case with spaces", []string{"C: user alice", "S: +OK Send your password.", "C: pass " + spaced}},
		{"AUTH PLAIN initial response", []string{"C: AUTH PLAIN " + plainIR("", "alice", pc)}},
		{"AUTH PLAIN authzid = authcid", []string{"C: auth plain " + plainIR("alice", "alice", spaced)}},
		{"AUTH PLAIN continuation", []string{"C: AUTH PLAIN", "S: + ", "C: " + plainIR("", "alice", pc)}},
		{"AUTH LOGIN", []string{
			"C: AUTH LOGIN",
			"S: + VXNlcm5hbWU6",
			"C: " + b64("alice"),
			"S: + UGFzc3dvcmQ6",
			"C: " + b64(spaced),
		}},
		{"AUTH LOGIN initial response", []string{
			"C: AUTH LOGIN " + b64("alice"),
			"S: + UGFzc3dvcmQ6",
			"C: " + b64(pc),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, w.k.POP3Plain)
			c.run("S: " + pop3Greeting)
			c.run(tc.steps...)
			c.run("S: +OK Logged in.")
			expectPOP3Session(t, w, c, "alice")
		})
	}
	t.Run("implicit TLS", func(t *testing.T) {
		c := dialTLS(t, w.k.POP3S, w.k.ClientTLS)
		c.run("S: "+pop3Greeting, "C: AUTH PLAIN "+plainIR("", "alice", pc), "S: +OK Logged in.")
		expectPOP3Session(t, w, c, "alice")
	})
	wantLog(t, w.k, "proto=pop3", "via=passcode app="+app)
	noLeak(t, w.k.Logs(), pc, spaced, masterPW, b64(pc), plainIR("", "alice", pc))
}

// Without 2FA and from a trusted network the user's own password passes
// through; a password too long for an initial response at the backend
// goes in a continuation there, and a long client response is accepted.
func TestPOP3Passthrough(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	c := dial(t, w.k.POP3Plain)
	c.run("S: "+pop3Greeting, "C: USER carol", "S: +OK Send your password.", "C: PASS "+carolPW, "S: +OK Logged in.")
	expectPOP3Session(t, w, c, "carol")
	if n := w.fake.continuations.Load(); n != 0 {
		t.Errorf("a short login used %d continuations at the backend", n)
	}

	c = dial(t, w.k.POP3Plain)
	c.run(
		"S: "+pop3Greeting,
		"C: AUTH PLAIN",
		"S: + ",
		"C: "+plainIR("", "erin", erinPW), // about 4 KiB
		"S: +OK Logged in.",
	)
	expectPOP3Session(t, w, c, "erin")
	if n := w.fake.continuations.Load(); n != 1 {
		t.Errorf("the long login used %d continuations at the backend, want 1", n)
	}
	noLeak(t, w.k.Logs(), carolPW, erinPW)
}

// APOP and USER/PASS out of order are refused with -ERR, and never reach
// the backend (SASL errors: TestFrontsSASLErrors).
func TestPOP3AuthErrors(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"APOP", []string{"C: APOP alice c4c9334bac560ecc979e58001b3e22fb", "S: -ERR APOP is not supported; use USER and PASS or AUTH."}},
		{"PASS without USER", []string{"C: PASS " + carolPW, "S: -ERR Send USER first."}},
		{"USER without a name", []string{"C: USER", "S: -ERR USER takes a user name."}},
		{"USER, then not PASS", []string{"C: USER carol", "S: +OK ...", "C: NOOP", "S: +OK", "C: PASS " + carolPW, "S: -ERR Send USER first."}},
		{"transaction command", []string{"C: STAT", "S: " + pop3NotAllowed}},
		{"NUL in USER", []string{"C: USER carol\x00alice", "S: -ERR NUL is not allowed in a command."}},
		{"NUL in PASS", []string{"C: USER carol", "S: +OK ...", "C: PASS x\x00" + carolPW, "S: -ERR NUL is not allowed in a command."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, w.k.POP3Plain)
			c.run("S: " + pop3Greeting)
			c.run(tc.steps...)
			c.run("C: NOOP", "S: +OK")
		})
	}
	if n := w.backend.accepts.Load(); n != 0 {
		t.Errorf("backend contacted %d times", n)
	}
}

// A command line may have 255 octets with its CRLF (RFC 2449 §4), a SASL
// response 8 KiB; a longer line ends the session, read no further than
// the limit.
func TestPOP3LineLimits(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	t.Run("255 octets", func(t *testing.T) {
		c := dial(t, w.k.POP3Plain)
		c.run("S: "+pop3Greeting, "C: NOOP "+strings.Repeat("x", 255-len("NOOP \r\n")), "S: +OK")
	})
	t.Run("256 octets", func(t *testing.T) {
		c := dial(t, w.k.POP3Plain)
		c.run("S: "+pop3Greeting, "C: NOOP "+strings.Repeat("x", 256-len("NOOP \r\n")), "S: -ERR Line too long.", "EOF")
	})
	t.Run("1 MB line without CRLF", func(t *testing.T) {
		c := dial(t, w.k.POP3Plain)
		c.run("S: " + pop3Greeting)
		// Written concurrently: kanmon stops reading at the limit, so
		// the write may block or fail.
		go func() {
			_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.conn.Write([]byte(strings.Repeat("x", 1<<20)))
		}()
		c.run("S: -ERR Line too long.", "EOF")
	})
	t.Run("AUTH response over 8 KiB", func(t *testing.T) {
		c := dial(t, w.k.POP3Plain)
		c.run("S: "+pop3Greeting, "C: AUTH PLAIN", "S: + ")
		go func() {
			_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.conn.Write([]byte(strings.Repeat("QUFB", 6<<10) + "\r\n"))
		}()
		c.run("S: -ERR Line too long.", "EOF")
	})
}

// Commands pipelined behind PASS (RFC 2449 PIPELINING) reach the backend
// after the login, in order.
func TestPOP3PipelinedAfterLogin(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	w.fake.deliver("alice", "first")
	c := dial(t, w.k.POP3Plain)
	c.run("S: " + pop3Greeting)
	c.write("USER alice\r\nPASS " + w.passcode + "\r\nSTAT\r\nNOOP\r\nQUIT\r\n")
	c.run(
		"S: +OK Send your password.",
		"S: +OK Logged in.",
		"S: +OK 1 ...",
		"S: +OK",
		"S: +OK Logging out.",
		"EOF",
	)
}
