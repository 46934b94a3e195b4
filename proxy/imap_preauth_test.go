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

// Shutting down cuts a backend login short too: it does not wait out the
// backend timeout.
func TestIMAPShutdownDuringBackendLogin(t *testing.T) {
	accepted := make(chan struct{}, 1)
	silent := startTCPServer(t, func(c net.Conn) {
		accepted <- struct{}{}
		_, _ = io.Copy(io.Discard, c)
	})
	k := kanmonFor(t, protoIMAP, silent.addr, kanmontest.Options{}) // backend timeout 15s
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
