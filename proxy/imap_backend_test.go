package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// backendScript plays the backend's side of a conversation on each
// connection kanmon makes. Steps:
//
//	"S: text" send text and CRLF (text may hold more CRLF-separated lines,
//	          sent in the same write)
//	"C: text" the next line from kanmon is text ("..." suffix: prefix)
//	"TLS"     server side of a TLS handshake with cert
//	"CLOSE"   hang up at once
//
// Then it drains the connection until kanmon closes it.
func backendScript(t *testing.T, cert *tls.Certificate, steps ...string) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		var conn net.Conn = c
		br := bufio.NewReader(conn)
		for i, step := range steps {
			switch {
			case strings.HasPrefix(step, "S: "):
				if _, err := io.WriteString(conn, step[3:]+"\r\n"); err != nil {
					t.Errorf("backend step %d: %v", i, err)
					return
				}
			case strings.HasPrefix(step, "C: "):
				got, err := br.ReadString('\n')
				if err != nil {
					t.Errorf("backend step %d: %v", i, err)
					return
				}
				if got = strings.TrimSuffix(got, "\r\n"); !lineMatches(got, step[3:]) {
					t.Errorf("backend step %d:\n got C: %s\nwant C: %s", i, got, step[3:])
					return
				}
			case step == "CLOSE":
				return
			case step == "TLS":
				tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{*cert}})
				if err := tc.Handshake(); err != nil {
					t.Errorf("backend TLS: %v", err)
					return
				}
				conn, br = tc, bufio.NewReader(tc)
			default:
				t.Errorf("bad backend step %q", step)
				return
			}
		}
		_, _ = io.Copy(io.Discard, br)
	}
}

// loginAs dials the plain listener, logs in and returns the reply's line.
func loginAs(t *testing.T, k *kanmontest.Kanmon, user, secret string) (*conv, string) {
	t.Helper()
	c := dial(t, k.IMAPPlain)
	c.run("S: * OK [CAPABILITY ...", fmt.Sprintf("C: a1 LOGIN %s %q", user, secret))
	return c, c.line()
}

func wantUnavailable(t *testing.T, line string) {
	t.Helper()
	if !lineMatches(line, "a1 "+unavailReply) {
		t.Fatalf("got %q, want a1 %s", line, unavailReply)
	}
}

func wantLog(t *testing.T, k *kanmontest.Kanmon, fragments ...string) {
	t.Helper()
	log := k.Logs()
	for _, f := range fragments {
		if !strings.Contains(log, f) {
			t.Errorf("log lacks %q:\n%s", f, log)
		}
	}
}

// An IMAP backend that misbehaves in its own grammar gets the client a
// temporary failure, never the authentication-failed reply; the log says
// why (down, silent, master refused: TestFrontsBackendUnavailable).
func TestIMAPBackendUnavailable(t *testing.T) {
	t.Run("bytes after its STARTTLS OK", func(t *testing.T) {
		fake := startTCPServer(t, backendScript(t, nil,
			"S: * OK [CAPABILITY IMAP4rev1 STARTTLS] fake",
			"C: k0 STARTTLS",
			"S: k0 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 SASL-IR] forged",
		))
		k := kanmonFor(t, protoIMAP, fake.addr, kanmontest.Options{BackendTLS: "starttls"})
		_, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		wantUnavailable(t, line)
		wantLog(t, k, "backend sent data after its STARTTLS reply")
	})
	t.Run("greeting is BYE", func(t *testing.T) {
		fake := startTCPServer(t, backendScript(t, nil, "S: * BYE Too many connections"))
		k := kanmonFor(t, protoIMAP, fake.addr, kanmontest.Options{})
		_, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		wantUnavailable(t, line)
		wantLog(t, k, "backend greeting is not OK")
	})
	t.Run("continuation after SASL-IR", func(t *testing.T) {
		fake := startTCPServer(t, backendScript(t, nil,
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR] fake",
			"C: k1 AUTHENTICATE PLAIN ...",
			"S: + ",
		))
		k := kanmonFor(t, protoIMAP, fake.addr, kanmontest.Options{}) // backend timeout 15s
		start := time.Now()
		_, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		wantUnavailable(t, line)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("UNAVAILABLE after %v: kanmon waited for the backend timeout", d)
		}
		wantLog(t, k, "unexpected continuation")
	})
	t.Run("temporary NO", func(t *testing.T) {
		fake := startTCPServer(t, backendScript(t, nil,
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR] fake",
			"C: k1 AUTHENTICATE PLAIN ...",
			"S: k1 NO [UNAVAILABLE] Maintenance",
		))
		k := kanmonFor(t, protoIMAP, fake.addr, kanmontest.Options{})
		_, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		wantUnavailable(t, line)
		_, line = loginAs(t, k, "carol", carolPW) // passthrough: not a wrong password
		wantUnavailable(t, line)
		if strings.Contains(k.Logs(), "level=ERROR") {
			t.Errorf("a temporary backend failure is logged as an ERROR:\n%s", k.Logs())
		}
	})
}

// A backend reached by STARTTLS, without SASL-IR after TLS and without
// capabilities in its OK: kanmon sends the master credentials in a
// continuation, asks CAPABILITY, and hands over what the backend sent
// past the login.
func TestIMAPBackendStartTLSLogin(t *testing.T) {
	cert, _ := backendCert(t)
	caFile, _, err := cert.WriteFiles(t.TempDir(), "backend.pem", "backend.key")
	if err != nil {
		t.Fatal(err)
	}
	fake := startTCPServer(t, backendScript(t, &cert.TLS,
		"S: * OK [CAPABILITY IMAP4rev1 STARTTLS SASL-IR LOGINDISABLED] fake",
		"C: k0 STARTTLS",
		"S: k0 OK Begin TLS",
		"TLS",
		"C: k1 AUTHENTICATE PLAIN",
		"S: + ",
		"C: "+plainIR("alice", masterUser, masterPW),
		"S: k1 OK Logged in",
		"C: k2 CAPABILITY",
		"S: * CAPABILITY IMAP4rev1 IDLE FAKECAP\r\nk2 OK done\r\n* 3 EXISTS",
		"C: x1 NOOP",
		"S: x1 OK relayed",
	))
	k := kanmonFor(t, protoIMAP, fake.addr, kanmontest.Options{
		BackendTLS:   "starttls",
		BackendExtra: fmt.Sprintf("ca_file = %q", caFile),
	})
	c, line := loginAs(t, k, "alice", k.Passcode("alice", app))
	if line != "a1 OK [CAPABILITY IMAP4rev1 IDLE FAKECAP] Logged in" {
		t.Fatalf("login reply %q", line)
	}
	c.run(
		"S: * 3 EXISTS",
		"C: x1 NOOP",
		"S: x1 OK relayed",
	)
}

// An implicit-TLS backend's certificate is verified against ca_file.
func TestIMAPBackendImplicitTLS(t *testing.T) {
	w := newWorld(t, worldOptions{}) // for its memimap
	memAddr := w.backend.addr
	cert, _ := backendCert(t)
	terminator := startTCPServer(t, func(c net.Conn) {
		forwardTo(memAddr)(tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert.TLS}}))
	})
	t.Run("trusted", func(t *testing.T) {
		caFile, _, err := cert.WriteFiles(t.TempDir(), "ca.pem", "ca.key")
		if err != nil {
			t.Fatal(err)
		}
		k := kanmonFor(t, protoIMAP, terminator.addr, kanmontest.Options{BackendTLS: "implicit", BackendExtra: fmt.Sprintf("ca_file = %q", caFile)})
		c, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		if !lineMatches(line, "a1 OK [CAPABILITY ...") {
			t.Fatalf("login reply %q", line)
		}
		c.run("C: a2 SELECT INBOX", "S*: a2 OK [READ-WRITE] ...")
	})
	t.Run("untrusted", func(t *testing.T) {
		other, err := selfsigned.New("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		caFile, _, err := other.WriteFiles(t.TempDir(), "ca.pem", "ca.key")
		if err != nil {
			t.Fatal(err)
		}
		k := kanmonFor(t, protoIMAP, terminator.addr, kanmontest.Options{BackendTLS: "implicit", BackendExtra: fmt.Sprintf("ca_file = %q", caFile)})
		_, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		wantUnavailable(t, line)
		wantLog(t, k, "backend TLS handshake failed")
	})
}
