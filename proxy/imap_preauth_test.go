package proxy_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Greeting and CAPABILITY on each kind of listener; the pre-auth commands
// that need no login.
func TestIMAPGreetingAndCapability(t *testing.T) {
	w := newWorld(t, worldOptions{})
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) *conv
	}{
		{"implicit TLS", func(t *testing.T) *conv { return dialTLS(t, w.k.IMAPS, w.k.ClientTLS) }},
		{"plain loopback", func(t *testing.T) *conv { return dial(t, w.k.IMAPPlain) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.dial(t)
			c.run(
				"S: * OK [CAPABILITY "+capsAuth+"] kanmon ready.",
				"C: a1 CAPABILITY",
				"S: * CAPABILITY "+capsAuth,
				"S: a1 OK CAPABILITY completed.",
				"C: a2 noop",
				"S: a2 OK NOOP completed.",
				`C: a3 ID ("name" "Thunderbird" "version" "128.0")`,
				"S: * ID NIL",
				"S: a3 OK ID completed.",
				"C: a4 STARTTLS",
				"S: a4 BAD STARTTLS is not available here.",
				"C: a5 LOGOUT",
				"S: * BYE Logging out.",
				"S: a5 OK LOGOUT completed.",
				"EOF",
			)
		})
	}
	t.Run("STARTTLS", func(t *testing.T) {
		c := dial(t, w.k.IMAPStartTLS)
		c.run(
			"S: * OK [CAPABILITY "+capsBeforeTLS+"] kanmon ready.",
			"C: a1 CAPABILITY",
			"S: * CAPABILITY "+capsBeforeTLS,
			"S: a1 OK CAPABILITY completed.",
			"C: a2 STARTTLS extra",
			"S: a2 BAD STARTTLS takes no arguments.",
			"C: a3 STARTTLS",
			"S: a3 OK Begin TLS negotiation now.",
		)
		c.startTLS(w.k.ClientTLS)
		c.run(
			"C: b1 CAPABILITY",
			"S: * CAPABILITY "+capsAuth,
			"S: b1 OK CAPABILITY completed.",
			"C: b2 STARTTLS",
			"S: b2 BAD STARTTLS is not available here.",
			"C: b3 LOGIN alice "+w.passcode,
			"S: b3 OK [CAPABILITY ...",
		)
	})
}

// Before TLS on a STARTTLS listener no credentials are taken, and the
// backend is never asked.
func TestIMAPPrivacyRequired(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := dial(t, w.k.IMAPStartTLS)
	c.run(
		"S: * OK [CAPABILITY "+capsBeforeTLS+"] kanmon ready.",
		"C: a1 LOGIN alice "+w.passcode,
		"S: a1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in.",
		"C: a2 AUTHENTICATE PLAIN "+plainIR("", "alice", w.passcode),
		"S: a2 NO [PRIVACYREQUIRED] Use STARTTLS before logging in.",
		"C: a3 NOOP",
		"S: a3 OK NOOP completed.",
	)
	if n := w.backend.accepts.Load(); n != 0 {
		t.Errorf("backend contacted %d times before TLS", n)
	}
	noLeak(t, w.k.Logs(), w.passcode)
}

// CVE-2011-0411: a command pipelined behind STARTTLS in clear text is
// dropped, never run inside the TLS session.
func TestIMAPStartTLSInjection(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := dial(t, w.k.IMAPStartTLS)
	c.run("S: * OK [CAPABILITY ...")
	c.write("a STARTTLS\r\nb LOGIN alice " + w.passcode + "\r\n")
	c.run("S: a OK Begin TLS negotiation now.")
	c.startTLS(w.k.ClientTLS)
	c.run(
		"C: c NOOP",
		"S: c OK NOOP completed.", // not "b OK ..."
	)
	if n := w.backend.accepts.Load(); n != 0 {
		t.Fatalf("the injected LOGIN reached the backend (%d connections)", n)
	}
	c.run(
		"C: d LOGIN alice "+w.passcode,
		"S: d OK [CAPABILITY ...",
	)
	if log := w.k.Logs(); !strings.Contains(log, "discarded bytes pipelined after STARTTLS") {
		t.Errorf("the discarded bytes are not logged:\n%s", log)
	}
}

// Three bad or failed commands end the session: the allowance counts BAD
// for unknown commands, a cancelled exchange and bad base64 alike.
func TestIMAPThreeStrikes(t *testing.T) {
	w := newWorld(t, worldOptions{})
	t.Run("bad commands", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		c.run(
			"S: * OK [CAPABILITY ...",
			"C: a1 SELECT INBOX",
			"S: a1 BAD Command not allowed before authentication.",
			"C: a2 AUTHENTICATE PLAIN",
			"S: + ",
			"C: *",
			"S: a2 BAD AUTHENTICATE cancelled.",
			"C: a3 AUTHENTICATE LOGIN",
			"S: + VXNlcm5hbWU6",
			"C: !!!not-base64!!!",
			"S: a3 BAD Invalid base64 in AUTHENTICATE response.",
			"S: * BYE Too many invalid commands.",
			"EOF",
		)
	})
	t.Run("failed logins", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		c.run(
			"S: * OK [CAPABILITY ...",
			"C: a1 LOGIN alice "+alicePW,
			"S: a1 "+failedReply,
			"C: a2 AUTHENTICATE PLAIN "+plainIR("", "alice", "WRONGWRONGWRONGW"),
			"S: a2 "+failedReply,
			"C: a3 AUTHENTICATE XOAUTH2",
			"S: a3 NO Unsupported authentication mechanism.",
			"S: * BYE Too many invalid commands.",
			"EOF",
		)
	})
	t.Run("good commands do not count", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		c.run(
			"S: * OK [CAPABILITY ...",
			"C: a1 FOO",
			"S: a1 BAD Command not allowed before authentication.",
			"C: a2 NOOP",
			"S: a2 OK NOOP completed.",
			"C: a3 BAR",
			"S: a3 BAD Command not allowed before authentication.",
			"C: a4 LOGIN alice "+w.passcode,
			"S: a4 OK [CAPABILITY ...",
		)
	})
}

// Limits on what a client may send before login reach it as BAD; only
// what cannot be resynchronised closes the connection.
func TestIMAPLiteralAndLineLimits(t *testing.T) {
	w := newWorld(t, worldOptions{})
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"huge size", []string{
			"C: a1 LOGIN alice {99999999999}",
			"S: a1 BAD Invalid literal size",
			"C: a2 NOOP",
			"S: a2 OK NOOP completed.",
		}},
		{"negative size", []string{
			"C: a1 LOGIN alice {-1}",
			"S: a1 BAD Invalid literal size",
		}},
		{"over the limit, no continuation", []string{
			"C: a1 LOGIN alice {8193}",
			"S: a1 BAD Literal too large",
			"C: a2 NOOP",
			"S: a2 OK NOOP completed.",
		}},
		{"non-synchronizing, huge: fatal", []string{
			"C: a1 LOGIN alice {99999999999+}",
			"S: a1 BAD Invalid literal size",
			"S: * BYE Cannot continue after that error.",
			"EOF",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, w.k.IMAPPlain)
			c.run("S: * OK [CAPABILITY ...")
			c.run(tc.steps...)
		})
	}
	t.Run("1 MB line without CRLF", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		c.run("S: * OK [CAPABILITY ...")
		// Written concurrently: kanmon stops reading at the limit, so
		// the write may block or fail.
		go func() {
			_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.conn.Write([]byte(strings.Repeat("x", 1<<20)))
		}()
		c.run(
			"S: * BAD Line too long",
			"S: * BYE ...",
			"EOF",
		)
	})
	t.Run("long AUTHENTICATE response", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		c.run(
			"S: * OK [CAPABILITY ...",
			"C: a1 AUTHENTICATE PLAIN",
			"S: + ",
		)
		// 3 × 8 KiB: were the rest of the line read as commands, they
		// would be answered "* BAD ...".
		go func() {
			_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.conn.Write([]byte(strings.Repeat("QUFB", 6<<10) + "\r\n"))
		}()
		c.run(
			"S: a1 BAD Line too long",
			"S: * BYE Cannot continue after that error.",
			"EOF",
		)
	})
}

// A client that sends nothing is logged out after preauth_timeout.
func TestIMAPPreAuthTimeout(t *testing.T) {
	w := newWorld(t, worldOptions{extra: `preauth_timeout = "300ms"`})
	t.Run("after greeting", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		start := time.Now()
		c.run(
			"S: * OK [CAPABILITY ...",
			"S: * BYE Autologout; idle for too long.",
			"EOF",
		)
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Errorf("logged out after %v, before the 300ms timeout", d)
		}
	})
	t.Run("no TLS handshake", func(t *testing.T) {
		conn, err := net.Dial("tcp", w.k.IMAPS)
		if err != nil {
			t.Fatal(err)
		}
		c := newConv(t, conn)
		c.expectEOF()
	})
}

// Shutting down ends pre-auth sessions at once: they do not wait out
// their pre-auth timeout.
func TestIMAPShutdownEndsPreAuthSessions(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := dial(t, w.k.IMAPPlain)
	c.run("S: * OK [CAPABILITY ...")
	s := dial(t, w.k.IMAPStartTLS)
	s.run("S: * OK [CAPABILITY ...")
	stopped := make(chan struct{})
	go func() {
		w.k.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("kanmon did not stop within 3s with idle pre-auth sessions")
	}
	c.run("S: * BYE Server shutting down.", "EOF")
	s.run("S: * BYE Server shutting down.", "EOF")
}

// Shutting down cuts a backend login short too: it does not wait out the
// backend timeout.
func TestIMAPShutdownDuringBackendLogin(t *testing.T) {
	accepted := make(chan struct{}, 1)
	silent := startTCPServer(t, func(c net.Conn) {
		accepted <- struct{}{}
		_, _ = io.Copy(io.Discard, c)
	})
	k := startKanmon(t, silent.addr, kanmontest.Options{}) // backend timeout 15s
	c := dial(t, k.IMAPPlain)
	c.run("S: * OK [CAPABILITY ...", "C: a1 LOGIN alice "+k.Passcode("alice", app))
	select {
	case <-accepted:
	case <-time.After(ioTimeout):
		t.Fatal("kanmon did not dial the backend")
	}
	stopped := make(chan struct{})
	go func() {
		k.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("kanmon did not stop within 3s during a backend login")
	}
	c.run("S: a1 "+unavailReply, "S: * BYE Server shutting down.", "EOF")
}

// Malformed SASL data is BAD, and never reaches the backend.
func TestIMAPAuthenticateMalformed(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := dial(t, w.k.IMAPPlain)
	c.run(
		"S: * OK [CAPABILITY ...",
		"C: a1 AUTHENTICATE PLAIN "+b64("carol"+carolPW),
		"S: a1 BAD Malformed AUTHENTICATE response.",
		"C: a2 AUTHENTICATE LOGIN "+b64("carol\x00alice"),
		"S: + UGFzc3dvcmQ6",
		"C: "+b64(carolPW),
		"S: a2 BAD Malformed AUTHENTICATE response.",
	)
	if n := w.backend.accepts.Load(); n != 0 {
		t.Errorf("backend contacted %d times", n)
	}
}
