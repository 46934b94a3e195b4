package proxy_test

import (
	"net"
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

// Before TLS on an STLS listener no credentials are taken, and the
// backend is never asked.
func TestPOP3PrivacyRequired(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	c := dial(t, w.k.POP3StartTLS)
	c.run(
		"S: "+pop3Greeting,
		"C: USER alice",
		"S: "+pop3Privacy,
		"C: PASS "+w.passcode,
		"S: "+pop3Privacy,
		"C: NOOP",
		"S: +OK",
		"C: AUTH PLAIN "+plainIR("", "alice", w.passcode),
		"S: "+pop3Privacy,
		"EOF", // the third refusal
	)
	c = dial(t, w.k.POP3StartTLS)
	c.run("S: "+pop3Greeting, "C: AUTH", "S: "+pop3Privacy)
	if n := w.backend.accepts.Load(); n != 0 {
		t.Errorf("backend contacted %d times before TLS", n)
	}
	noLeak(t, w.k.Logs(), w.passcode)
}

// CVE-2011-0411: commands pipelined behind STLS in clear text are
// dropped, never run inside the TLS session.
func TestPOP3STLSInjection(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	c := dial(t, w.k.POP3StartTLS)
	c.run("S: " + pop3Greeting)
	c.write("STLS\r\nUSER alice\r\nCAPA\r\n")
	c.run("S: +OK Begin TLS negotiation now.")
	c.startTLS(w.k.ClientTLS)
	c.run(
		"C: PASS "+w.passcode,
		"S: -ERR Send USER first.", // the injected USER did not run
		"C: NOOP",
		"S: +OK", // and the injected CAPA was not answered
		"C: USER alice",
		"S: +OK Send your password.",
		"C: PASS "+w.passcode,
		"S: +OK Logged in.",
	)
	wantLog(t, w.k, "discarded bytes pipelined after STLS")
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

// Every refused login gets the same reply, byte for byte; the log says
// why, and never holds the secret.
func TestPOP3UniformFailure(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	out := newPOP3World(t, worldOptions{trusted: []string{}})
	wrong := "QQQQWWWWEEEERRRR"
	if wrong == w.passcode {
		wrong = "WWWWQQQQEEEERRRR"
	}
	for _, tc := range []struct {
		name    string
		w       *pop3World
		steps   []string
		reason  auth.Reason
		backend bool // the backend is asked (passthrough)
		secret  string
	}{
		{"wrong passcode", w, []string{"C: USER alice", "S: +OK ...", "C: PASS " + wrong},
			auth.ReasonNoMatch, false, wrong},
		{"wrong passcode by AUTH PLAIN", w, []string{"C: AUTH PLAIN", "S: + ", "C: " + plainIR("", "alice", wrong)},
			auth.ReasonNoMatch, false, wrong},
		{"2FA user with her account password", w, []string{"C: AUTH LOGIN " + b64("alice"), "S: + ...", "C: " + b64(alicePW)},
			auth.ReasonNotPasscode, false, alicePW},
		{"unknown user", w, []string{"C: USER mallory", "S: +OK ...", "C: PASS mallory-pw-Q9x"},
			auth.ReasonBackendRejected, true, "mallory-pw-Q9x"},
		{"carol's wrong password", w, []string{"C: AUTH PLAIN " + plainIR("", "carol", "not-carols-pw-3")},
			auth.ReasonBackendRejected, true, "not-carols-pw-3"},
		{"PLAIN authzid differs", w, []string{"C: AUTH PLAIN " + plainIR("carol", "alice", w.passcode)},
			auth.ReasonAuthzid, false, w.passcode},
		{"empty password", w, []string{"C: USER alice", "S: +OK ...", "C: PASS "},
			auth.ReasonEmptySecret, false, ""},
		{"no 2FA from outside trusted_networks", out, []string{"C: USER carol", "S: +OK ...", "C: PASS " + carolPW},
			auth.ReasonOutside, false, carolPW},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.w.backend.accepts.Load()
			c := dial(t, tc.w.k.POP3Plain)
			c.run("S: " + pop3Greeting)
			c.run(tc.steps...)
			if got := c.line(); got != pop3Failed {
				t.Errorf("reply:\n got %q\nwant %q", got, pop3Failed)
			}
			c.run("C: NOOP", "S: +OK")
			if contacted := tc.w.backend.accepts.Load() > before; contacted != tc.backend {
				t.Errorf("backend contacted: %v, want %v", contacted, tc.backend)
			}
			wantLog(t, tc.w.k, `reason="`+tc.reason.String()+`"`)
			noLeak(t, tc.w.k.Logs(), tc.secret)
		})
	}
}

// Cancelled and malformed SASL exchanges, unknown mechanisms and APOP are
// refused with -ERR, and never reach the backend.
func TestPOP3AuthErrors(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"cancel PLAIN", []string{"C: AUTH PLAIN", "S: + ", "C: *", "S: -ERR AUTH cancelled."}},
		{"cancel LOGIN password", []string{"C: AUTH LOGIN " + b64("alice"), "S: + UGFzc3dvcmQ6", "C: *", "S: -ERR AUTH cancelled."}},
		{"cancel as initial response", []string{"C: AUTH PLAIN *", "S: -ERR AUTH cancelled."}},
		{"bad base64", []string{"C: AUTH LOGIN", "S: + VXNlcm5hbWU6", "C: !!!not-base64!!!", "S: -ERR Invalid base64 in AUTH response."}},
		{"bad base64 initial response", []string{"C: AUTH PLAIN a=b=c", "S: -ERR Invalid base64 in AUTH response."}},
		{"PLAIN without NULs", []string{"C: AUTH PLAIN " + b64("carol"+carolPW), "S: -ERR Malformed AUTH response."}},
		{"empty initial response", []string{"C: AUTH PLAIN =", "S: -ERR Malformed AUTH response."}},
		{"NUL in LOGIN", []string{"C: AUTH LOGIN " + b64("carol\x00alice"), "S: + UGFzc3dvcmQ6", "C: " + b64(carolPW), "S: -ERR Malformed AUTH response."}},
		{"unknown mechanism", []string{"C: AUTH CRAM-MD5", "S: -ERR Unsupported authentication mechanism."}},
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

// Three bad or failed commands end the session; good ones do not count.
func TestPOP3ThreeStrikes(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	t.Run("bad commands", func(t *testing.T) {
		c := dial(t, w.k.POP3Plain)
		c.run(
			"S: "+pop3Greeting,
			"C: RETR 1",
			"S: "+pop3NotAllowed,
			"C: AUTH PLAIN",
			"S: + ",
			"C: *",
			"S: -ERR AUTH cancelled.",
			"C: AUTH LOGIN",
			"S: + VXNlcm5hbWU6",
			"C: %%%",
			"S: -ERR Invalid base64 in AUTH response.",
			"EOF",
		)
	})
	t.Run("failed logins", func(t *testing.T) {
		c := dial(t, w.k.POP3Plain)
		c.run(
			"S: "+pop3Greeting,
			"C: USER alice",
			"S: +OK Send your password.",
			"C: PASS "+alicePW,
			"S: "+pop3Failed,
			"C: AUTH PLAIN "+plainIR("", "alice", "WRONGWRONGWRONGW"),
			"S: "+pop3Failed,
			"C: APOP alice 0123456789abcdef0123456789abcdef",
			"S: -ERR APOP is not supported; use USER and PASS or AUTH.",
			"EOF",
		)
	})
	t.Run("good commands do not count", func(t *testing.T) {
		c := dial(t, w.k.POP3Plain)
		c.run("S: "+pop3Greeting, "C: FOO", "S: "+pop3NotAllowed, "C: NOOP", "S: +OK", "C: BAR", "S: "+pop3NotAllowed)
		c.run(pop3Capa("RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN LOGIN")...)
		c.run("C: AUTH PLAIN "+plainIR("", "alice", w.passcode), "S: +OK Logged in.")
	})
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

// A client that sends nothing is disconnected after preauth_timeout; one
// that stops in the middle of AUTH too.
func TestPOP3PreAuthTimeout(t *testing.T) {
	w := newPOP3World(t, worldOptions{extra: `preauth_timeout = "300ms"`})
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"after greeting", nil},
		{"in AUTH", []string{"C: AUTH LOGIN", "S: + VXNlcm5hbWU6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, w.k.POP3Plain)
			start := time.Now()
			c.run("S: " + pop3Greeting)
			c.run(tc.steps...)
			c.run("S: -ERR Disconnected for inactivity.", "EOF")
			if d := time.Since(start); d < 250*time.Millisecond {
				t.Errorf("disconnected after %v, before the 300ms timeout", d)
			}
		})
	}
	t.Run("no TLS handshake", func(t *testing.T) {
		conn, err := net.Dial("tcp", w.k.POP3S)
		if err != nil {
			t.Fatal(err)
		}
		newConv(t, conn).expectEOF()
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

// Shutting down ends pre-auth sessions at once.
func TestPOP3ShutdownEndsPreAuthSessions(t *testing.T) {
	w := newPOP3World(t, worldOptions{})
	c := dial(t, w.k.POP3Plain)
	c.run("S: " + pop3Greeting)
	stopped := make(chan struct{})
	go func() {
		w.k.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("kanmon did not stop within 3s with an idle pre-auth session")
	}
	c.run("S: -ERR Server shutting down.", "EOF")
}
