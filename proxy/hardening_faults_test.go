package proxy_test

// Hardening, faults: a backend that refuses, stalls, resets, closes or
// talks garbage gets the client its protocol's temporary error within the
// backend timeout, never a hang, and the connection goes on; a backend
// that resets a relayed session ends the client's connection at once;
// TLS handshakes that stall, on either side, and slowloris clients are
// cut at their timeout; a client that connects and leaves without a word
// is a debug line, not an error; a lockout database that fails closes
// every login (fail closed).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

const (
	// faultTimeout is the backend timeout of the fault tests.
	faultTimeout = 500 * time.Millisecond
	// faultPreAuth is their pre-auth timeout.
	faultPreAuth = 500 * time.Millisecond
	// faultSlack is how much later than its timeout a cut may come on a
	// loaded machine under -race.
	faultSlack = 1500 * time.Millisecond
)

// Backend faults, at the step where they happen.
const (
	faultRefuses        = "refuses the connection"
	faultNoGreeting     = "stalls without a greeting"
	faultGarbage        = "sends a garbage greeting"
	faultEndless        = "sends an endless greeting"
	faultNoLoginReply   = "stalls without a reply to the login"
	faultResetLogin     = "resets during the login"
	faultCloseLogin     = "closes during the login"
	faultTLSStall       = "stalls in the implicit TLS handshake"
	faultSTARTTLSStall  = "stalls in the STARTTLS handshake"
	faultResetInSession = "resets a relayed session"
)

// stalls are the faults only the backend timeout ends.
var stalls = map[string]bool{faultNoGreeting: true, faultNoLoginReply: true, faultTLSStall: true, faultSTARTTLSStall: true}

// resetConn closes c with an RST instead of a FIN.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// faultBackend plays a proto backend with fault. Up to the fault it is a
// well-behaved backend that offers STARTTLS and accepts any login.
func faultBackend(proto, fault string) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(4 * ioTimeout))
		stall := func() { _, _ = io.Copy(io.Discard, c) }
		send := func(s string) { _, _ = io.WriteString(c, s+"\r\n") }
		switch fault {
		case faultNoGreeting, faultTLSStall:
			stall()
			return
		case faultGarbage:
			send("\x16\x03\x01\x00\xa5\x01\x00\xff\xfeHTTP/1.1 400 Bad Request")
			stall()
			return
		case faultEndless:
			_, _ = c.Write([]byte(strings.Repeat("* OK ", 30000)))
			stall()
			return
		}
		switch proto {
		case protoIMAP:
			send("* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS] fault")
		case protoPOP3:
			send("+OK fault")
		default:
			send("220 fault ESMTP")
		}
		br := bufio.NewReader(c)
		loggedIn := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\r\n")
			tag, rest, _ := strings.Cut(line, " ")
			verb := strings.ToUpper(tag)
			if proto == protoIMAP {
				verb, _, _ = strings.Cut(strings.ToUpper(rest), " ")
			}
			switch {
			case loggedIn && fault == faultResetInSession:
				resetConn(c)
				return
			case verb == "STARTTLS" || verb == "STLS":
				switch proto {
				case protoIMAP:
					send(tag + " OK Begin TLS")
				case protoPOP3:
					send("+OK Begin TLS")
				default:
					send("220 2.0.0 Go ahead")
				}
				stall() // faultSTARTTLSStall: no handshake follows
				return
			case verb == "EHLO":
				send("250-fault\r\n250-STARTTLS\r\n250 AUTH PLAIN")
			case verb == "QUIT":
				send("221 2.0.0 Bye")
				return
			case verb == "AUTH" || verb == "AUTHENTICATE":
				switch fault {
				case faultNoLoginReply:
					stall()
					return
				case faultResetLogin:
					resetConn(c)
					return
				case faultCloseLogin:
					return
				}
				loggedIn = true
				switch proto {
				case protoIMAP:
					send(tag + " OK [CAPABILITY IMAP4rev1] Logged in")
				case protoPOP3:
					send("+OK Logged in.")
				default:
					send("235 2.7.0 Authentication successful")
				}
			default:
				send("500 what?")
			}
		}
	}
}

// loginSteps are the client's steps up to its login command, and the
// login command with alice's passcode pc, on the plain listener.
func loginSteps(proto, pc string) (pre []string, login string) {
	switch proto {
	case protoIMAP:
		return []string{"S: * OK [CAPABILITY ..."}, "a1 LOGIN alice " + pc
	case protoPOP3:
		return []string{"S: " + pop3Greeting, "C: USER alice", "S: +OK Send your password."}, "PASS " + pc
	}
	return []string{smtpGreeting, "C: EHLO client.example.org"}, "AUTH PLAIN " + plainIR("", "alice", pc)
}

// unavailableReply is proto's temporary login failure, as a transcript
// step.
func unavailableReply(proto string) string {
	switch proto {
	case protoIMAP:
		return "S: a1 " + unavailReply
	case protoPOP3:
		return "S: " + pop3Unavailable
	}
	return "S: " + smtpUnavailable
}

// noop checks that the connection still takes commands.
func noop(c *conv, proto string) {
	c.t.Helper()
	switch proto {
	case protoIMAP:
		c.run("C: a9 NOOP", "S: a9 OK NOOP completed.")
	case protoPOP3:
		c.run("C: NOOP", "S: +OK")
	default:
		c.run("C: NOOP", "S: "+smtpOK)
	}
}

// skipEHLO reads the rest of an EHLO reply.
func skipEHLO(c *conv) {
	c.t.Helper()
	for l := c.line(); !strings.HasPrefix(l, "250 "); l = c.line() {
		if !strings.HasPrefix(l, "250-") {
			c.t.Fatalf("EHLO reply line %q", l)
		}
	}
}

func TestHardeningBackendFaults(t *testing.T) {
	faults := []string{faultRefuses, faultNoGreeting, faultGarbage, faultEndless, faultNoLoginReply,
		faultResetLogin, faultCloseLogin, faultTLSStall, faultSTARTTLSStall}
	for _, proto := range protocols {
		for _, fault := range faults {
			t.Run(proto+" "+fault, func(t *testing.T) {
				t.Parallel()
				addr := deadAddr(t)
				if fault != faultRefuses {
					addr = startTCPServer(t, faultBackend(proto, fault)).addr
				}
				keys := []string{fmt.Sprintf("timeout = %q", faultTimeout)}
				switch fault {
				case faultTLSStall:
					keys = append(keys, `tls = "implicit"`)
				case faultSTARTTLSStall:
					keys = append(keys, `tls = "starttls"`)
				}
				k := kanmonFor(t, proto, addr, kanmontest.Options{}, keys...)
				_, _, plain := listeners(k, proto)
				pre, login := loginSteps(proto, k.Passcode("alice", app))
				c := dial(t, plain)
				c.run(pre...)
				if proto == protoSMTP {
					skipEHLO(c) // after a probe, which may have met the fault too
				}
				start := time.Now()
				c.run("C: " + login)
				c.run(unavailableReply(proto))
				d := time.Since(start)
				if d > faultTimeout+faultSlack {
					t.Errorf("the temporary error came after %v; the backend timeout is %v", d, faultTimeout)
				}
				if stalls[fault] && d < faultTimeout*8/10 {
					t.Errorf("the temporary error came after %v, before the %v backend timeout", d, faultTimeout)
				}
				noop(c, proto)
				log := k.Logs()
				if !strings.Contains(log, `level=WARN msg="backend unavailable"`) || strings.Contains(log, "level=ERROR") {
					t.Errorf("want one WARN for the backend and no ERROR:\n%s", log)
				}
			})
		}
		t.Run(proto+" "+faultResetInSession, func(t *testing.T) {
			t.Parallel()
			fb := startTCPServer(t, faultBackend(proto, faultResetInSession))
			k := kanmonFor(t, proto, fb.addr, kanmontest.Options{}, fmt.Sprintf("timeout = %q", faultTimeout))
			_, _, plain := listeners(k, proto)
			pre, login := loginSteps(proto, k.Passcode("alice", app))
			c := dial(t, plain)
			c.run(pre...)
			if proto == protoSMTP {
				skipEHLO(c)
			}
			c.run("C: " + login)
			if l := c.line(); !loginOK(proto, l) {
				t.Fatalf("login reply %q", l)
			}
			start := time.Now()
			c.write("a2 NOOP\r\n")
			c.expectEOF()
			if d := time.Since(start); d > faultSlack {
				t.Errorf("the client's connection ended %v after the backend's reset", d)
			}
			c.conn.Close()
			// A reset is an ordinary end of a session for the relay.
			waitLog(t, k, `msg="session ended"`, 1)
		})
	}
}

// closedWithin reads conn until it ends and returns how long that took
// from start; a timeout of the test's own deadline fails.
func closedWithin(t *testing.T, conn net.Conn, start time.Time) time.Duration {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(ioTimeout))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open after %v", time.Since(start))
	}
	return time.Since(start)
}

// wantCut checks that a connection was cut at about the pre-auth timeout:
// not before it, and well before the slow client would have finished.
func wantCut(t *testing.T, what string, d time.Duration) {
	t.Helper()
	if d < faultPreAuth*8/10 || d > faultPreAuth+faultSlack {
		t.Errorf("%s: cut after %v, want about the %v pre-auth timeout", what, d, faultPreAuth)
	}
}

// A client that stalls in its TLS handshake, on the implicit-TLS listener
// or after STARTTLS, is cut at the pre-auth timeout.
func TestHardeningClientTLSStall(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			k := kanmonFor(t, proto, deadAddr(t), kanmontest.Options{Extra: fmt.Sprintf("preauth_timeout = %q", faultPreAuth)})
			implicit, starttls, _ := listeners(k, proto)
			t.Run("implicit, nothing sent", func(t *testing.T) {
				start := time.Now()
				c := dial(t, implicit)
				wantCut(t, "silent", closedWithin(t, c.conn, start))
			})
			t.Run("implicit, half a ClientHello", func(t *testing.T) {
				start := time.Now()
				c := dial(t, implicit)
				c.write("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") // a record of 512 bytes announced
				wantCut(t, "half a ClientHello", closedWithin(t, c.conn, start))
			})
			t.Run("STARTTLS, no handshake", func(t *testing.T) {
				c := dial(t, starttls)
				c.run(greeting(proto))
				start := time.Now()
				switch proto {
				case protoIMAP:
					c.run("C: a1 STARTTLS", "S: a1 OK Begin TLS negotiation now.")
				case protoPOP3:
					c.run("C: STLS", "S: +OK Begin TLS negotiation now.")
				default:
					c.run("C: STARTTLS", "S: 220 2.0.0 Ready to start TLS")
				}
				wantCut(t, "no handshake after STARTTLS", closedWithin(t, c.conn, start))
			})
			if log := k.Logs(); strings.Contains(log, "level=ERROR") || strings.Contains(log, "level=WARN") {
				t.Errorf("a stalled handshake is logged above debug:\n%s", log)
			}
		})
	}
}

// trickle writes data one byte every interval until it is all sent, the
// write fails, or stop is closed; wait waits for it to end.
func trickle(conn net.Conn, data string, interval time.Duration) (stop, wait func()) {
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(data); i++ {
			_ = conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := conn.Write([]byte{data[i]}); err != nil {
				return
			}
			select {
			case <-quit:
				return
			case <-time.After(interval):
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit) }) }, func() { <-done }
}

// Slowloris: a client that sends a byte every 200 ms, never a whole
// command within the 500 ms pre-auth timeout, is cut at that timeout,
// counted from the start of the command (or of the SASL response, or of
// the TLS handshake), not from its last byte; it gets the idle goodbye
// and never the answer to its command.
func TestHardeningSlowloris(t *testing.T) {
	const interval = 200 * time.Millisecond
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			k := kanmonFor(t, proto, deadAddr(t), kanmontest.Options{Extra: fmt.Sprintf("preauth_timeout = %q", faultPreAuth)})
			implicit, _, plain := listeners(k, proto)
			var command, goodbye string
			var authStart []string
			switch proto {
			case protoIMAP:
				command, goodbye = "slowloris001 NOOP\r\n", "* BYE Autologout; idle for too long."
				authStart = []string{"C: a1 AUTHENTICATE PLAIN", "S: + "}
			case protoPOP3:
				command, goodbye = "NOOP slowloris001\r\n", "-ERR Disconnected for inactivity."
				authStart = []string{"C: AUTH PLAIN", "S: + "}
			default:
				command, goodbye = "NOOP slowloris001\r\n", "421 4.4.2 Idle for too long; closing connection"
				authStart = []string{"C: EHLO client.example.org"}
			}
			run := func(t *testing.T, c *conv, data string) {
				t.Helper()
				start := time.Now()
				stop, wait := trickle(c.conn, data, interval)
				defer wait()
				defer stop()
				c.run("S: "+goodbye, "EOF")
				wantCut(t, "slowloris", time.Since(start))
			}
			t.Run("command", func(t *testing.T) {
				c := dial(t, plain)
				c.run(greeting(proto))
				run(t, c, command)
			})
			t.Run("SASL response", func(t *testing.T) {
				c := dial(t, plain)
				c.run(greeting(proto))
				c.run(authStart...)
				if proto == protoSMTP {
					skipEHLO(c)
					c.run("C: AUTH PLAIN", "S: 334 ")
				}
				run(t, c, plainIR("", "alice", k.Passcode("alice", app))+"\r\n")
			})
			if proto == protoIMAP {
				t.Run("literal", func(t *testing.T) {
					c := dial(t, plain)
					c.run(greeting(proto), "C: a1 LOGIN {16}", "S: + Ready for literal data")
					run(t, c, k.Passcode("alice", app)+" x\r\n")
				})
			}
			t.Run("TLS handshake", func(t *testing.T) {
				start := time.Now()
				c := dial(t, implicit)
				stop, wait := trickle(c.conn, "\x16\x03\x01\x00\x40"+strings.Repeat("\x00", 64), interval)
				defer wait()
				defer stop()
				wantCut(t, "slow ClientHello", closedWithin(t, c.conn, start))
			})
		})
	}
}

// A client that connects and goes without a word, or after the greeting,
// is one debug line; nothing is logged above debug.
func TestHardeningConnectAndClose(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			k := kanmonFor(t, proto, deadAddr(t), kanmontest.Options{})
			implicit, starttls, plain := listeners(k, proto)
			for _, addr := range []string{plain, starttls, implicit} {
				c, err := net.DialTimeout("tcp", addr, ioTimeout)
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
			for _, addr := range []string{plain, starttls} {
				c := dial(t, addr)
				c.run(greeting(proto))
				c.conn.Close()
			}
			c := dialTLS(t, implicit, k.ClientTLS)
			c.run(greeting(proto))
			c.conn.Close()
			waitLog(t, k, `level=DEBUG msg="connection closed before login"`, 5)
			waitLog(t, k, `level=DEBUG msg="TLS handshake failed"`, 1)
			log := k.Logs()
			if strings.Contains(log, "level=ERROR") || strings.Contains(log, "level=WARN") {
				t.Errorf("a client that said nothing is logged above debug:\n%s", log)
			}
		})
	}
}

// The lockout database fails: every login is refused as temporarily
// unavailable, passcode and passthrough alike, before the backend is
// asked; the log says why, at ERROR.
func TestHardeningLockoutFailsClosed(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			fb := startTCPServer(t, faultBackend(proto, faultResetInSession))
			k := kanmonFor(t, proto, fb.addr, kanmontest.Options{})
			_, _, plain := listeners(k, proto)
			if proto == protoSMTP {
				// Warm the EHLO cache: the probe is not a login.
				c := dialSMTP(t, plain)
				c.ehlo("client.example.org")
				c.conn.Close()
			}
			if err := k.Guard.Close(); err != nil {
				t.Fatal(err)
			}
			before := fb.accepts.Load()
			for _, secret := range []string{k.Passcode("alice", app), alicePW} {
				pre, login := loginSteps(proto, secret)
				c := dial(t, plain)
				c.run(pre...)
				if proto == protoSMTP {
					skipEHLO(c)
				}
				c.run("C: "+login, unavailableReply(proto))
			}
			c := dial(t, plain)
			pre, _ := loginSteps(proto, "")
			c.run(pre...)
			switch proto {
			case protoIMAP:
				c.run("C: a1 LOGIN carol "+carolPW, unavailableReply(proto))
			case protoPOP3:
				c.run("C: USER carol", "S: +OK ...", "C: PASS "+carolPW, unavailableReply(proto))
			default:
				skipEHLO(c)
				c.run("C: AUTH PLAIN "+plainIR("", "carol", carolPW), unavailableReply(proto))
			}
			if n := fb.accepts.Load() - before; n != 0 {
				t.Errorf("the backend was asked %d times with the lockout database closed", n)
			}
			wantLog(t, k, `level=ERROR msg="lockout state unavailable; refusing logins until it recovers"`)
		})
	}
}
