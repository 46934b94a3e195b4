package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// forwardSeen is what a recording backend got before the login: the PROXY
// header, if it read one, and the command lines before AUTHENTICATE/AUTH.
type forwardSeen struct {
	header *proxyproto.Header
	lines  []string
}

// recordingBackend is an IMAP or POP3 backend that reads a PROXY header
// first when withHeader, answers ID and XCLIENT with reply (OK when
// empty), accepts any login, and reports what it saw on got.
func recordingBackend(t *testing.T, proto string, withHeader bool, reply string) (string, <-chan forwardSeen) {
	got := make(chan forwardSeen, 4)
	srv := startTCPServer(t, func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		br := bufio.NewReader(c)
		var s forwardSeen
		if withHeader {
			h, err := proxyproto.Read(br)
			if err != nil {
				t.Errorf("backend: PROXY header: %v", err)
				return
			}
			s.header = h
		}
		greeting, ok := "* OK [CAPABILITY IMAP4rev1 SASL-IR ID] ready", "OK ID completed."
		if proto == "pop3" {
			greeting, ok = "+OK ready", "+OK Updated"
		}
		if reply == "" {
			reply = ok
		}
		fmt.Fprintf(c, "%s\r\n", greeting)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\r\n")
			tag, cmd, _ := strings.Cut(line, " ")
			switch {
			case proto == "imap" && strings.HasPrefix(cmd, "AUTHENTICATE"):
				got <- s
				fmt.Fprintf(c, "%s OK [CAPABILITY IMAP4rev1] Logged in\r\n", tag)
				_, _ = io.Copy(io.Discard, br)
				return
			case proto == "pop3" && tag == "AUTH":
				got <- s
				fmt.Fprintf(c, "+OK Logged in.\r\n")
				_, _ = io.Copy(io.Discard, br)
				return
			case proto == "imap":
				s.lines = append(s.lines, line)
				fmt.Fprintf(c, "* ID NIL\r\n%s %s\r\n", tag, reply)
			default:
				s.lines = append(s.lines, line)
				fmt.Fprintf(c, "%s\r\n", reply)
			}
		}
	})
	return srv.addr, got
}

// forwardKanmon starts kanmon in front of a recording backend for proto
// with forward_client_ip = mode, and campus webmail at 127.0.0.1 trusted
// for ID.
func forwardKanmon(t *testing.T, proto, mode, backend string) *kanmontest.Kanmon {
	o := kanmontest.Options{
		MasterUser: masterUser, MasterPassword: masterPW,
		Passcodes: map[string][]string{"alice": {app}},
		Extra:     `id_trusted_networks = ["127.0.0.1/32"]`,
	}
	keys := fmt.Sprintf("forward_client_ip = %q", mode)
	if proto == "imap" {
		o.IMAPBackend, o.BackendExtra = backend, keys
	} else {
		o.POP3Backend, o.POP3BackendExtra = backend, keys
	}
	return kanmontest.Start(t, o)
}

// tcpPort is the port of a TCP address.
func tcpPort(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }

func waitSeen(t *testing.T, got <-chan forwardSeen) forwardSeen {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(ioTimeout):
		t.Fatal("the backend saw no login")
		return forwardSeen{}
	}
}

// The backend learns the client's address in the way forward_client_ip
// names: IMAP ID, XCLIENT, or a PROXY v2 header; and only that.
func TestForwardClientIPToBackend(t *testing.T) {
	session := `[0-9a-f]{12}`
	t.Run("imap id", func(t *testing.T) {
		addr, got := recordingBackend(t, "imap", false, "")
		k := forwardKanmon(t, "imap", "id", addr)
		c := dial(t, k.IMAPPlain)
		c.run("S: * OK [CAPABILITY ...", "C: a1 LOGIN alice "+k.Passcode("alice", app), "S: a1 OK [CAPABILITY ...")
		s := waitSeen(t, got)
		want := regexp.MustCompile(`^k3 ID \("x-originating-ip" "127\.0\.0\.1" "x-originating-port" "` + tcpPort(c.conn.LocalAddr()) +
			`" "x-connected-ip" "127\.0\.0\.1" "x-connected-port" "` + tcpPort(c.conn.RemoteAddr()) + `" "x-session-id" "` + session + `"\)$`)
		if len(s.lines) != 1 || !want.MatchString(s.lines[0]) {
			t.Errorf("backend saw %q, want one line matching %s", s.lines, want)
		}
	})
	t.Run("imap id carries the webmail user's address", func(t *testing.T) {
		addr, got := recordingBackend(t, "imap", false, "")
		k := forwardKanmon(t, "imap", "id", addr)
		c := dial(t, k.IMAPPlain)
		c.run("S: * OK [CAPABILITY ...", `C: a0 ID ("x-originating-ip" "2001:db8::5" "x-originating-port" "51000")`,
			"S: * ID NIL", "S: a0 OK ID completed.",
			"C: a1 LOGIN alice "+k.Passcode("alice", app), "S: a1 OK [CAPABILITY ...")
		s := waitSeen(t, got)
		if len(s.lines) != 1 || !strings.HasPrefix(s.lines[0], `k3 ID ("x-originating-ip" "2001:db8::5" "x-originating-port" "51000" "x-connected-ip" "127.0.0.1"`) {
			t.Errorf("backend saw %q", s.lines)
		}
	})
	t.Run("imap id refused", func(t *testing.T) {
		addr, _ := recordingBackend(t, "imap", false, "BAD Unknown command")
		k := forwardKanmon(t, "imap", "id", addr)
		_, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		wantUnavailable(t, line)
		wantLog(t, k, "backend refused ID")
	})
	t.Run("pop3 xclient", func(t *testing.T) {
		addr, got := recordingBackend(t, "pop3", false, "")
		k := forwardKanmon(t, "pop3", "xclient", addr)
		c := dial(t, k.POP3Plain)
		c.run("S: "+pop3Greeting, "C: USER alice", "S: +OK Send your password.", "C: PASS "+k.Passcode("alice", app), "S: +OK ...")
		s := waitSeen(t, got)
		want := regexp.MustCompile(`^XCLIENT ADDR=127\.0\.0\.1 PORT=` + tcpPort(c.conn.LocalAddr()) + ` SESSION=` + session + `$`)
		if len(s.lines) != 1 || !want.MatchString(s.lines[0]) {
			t.Errorf("backend saw %q, want one line matching %s", s.lines, want)
		}
	})
	t.Run("pop3 xclient refused", func(t *testing.T) {
		addr, _ := recordingBackend(t, "pop3", false, "-ERR Unknown command")
		k := forwardKanmon(t, "pop3", "xclient", addr)
		if got := pop3LoginAs(t, k.POP3Plain, "alice", k.Passcode("alice", app)); got != pop3Unavailable {
			t.Errorf("got %q, want %q", got, pop3Unavailable)
		}
		wantLog(t, k, "backend refused XCLIENT")
	})
	for _, proto := range []string{"imap", "pop3"} {
		t.Run(proto+" proxy v2", func(t *testing.T) {
			addr, got := recordingBackend(t, proto, true, "")
			k := forwardKanmon(t, proto, "proxy", addr)
			var c *conv
			if proto == "imap" {
				c = newConv(t, dialFrom(t, "127.0.0.3", k.IMAPPlain))
				c.run("S: * OK [CAPABILITY ...", "C: a1 LOGIN alice "+k.Passcode("alice", app), "S: a1 OK [CAPABILITY ...")
			} else {
				c = newConv(t, dialFrom(t, "127.0.0.3", k.POP3Plain))
				c.run("S: "+pop3Greeting, "C: USER alice", "S: +OK Send your password.", "C: PASS "+k.Passcode("alice", app), "S: +OK ...")
			}
			s := waitSeen(t, got)
			h := s.header
			if h == nil || h.Version != 2 || !h.Command.IsProxy() {
				t.Fatalf("header %+v", h)
			}
			if h.SourceAddr.String() != c.conn.LocalAddr().String() || h.DestinationAddr.String() != c.conn.RemoteAddr().String() {
				t.Errorf("header %s → %s, want %s → %s", h.SourceAddr, h.DestinationAddr, c.conn.LocalAddr(), c.conn.RemoteAddr())
			}
			if len(s.lines) != 0 {
				t.Errorf("backend also saw %q", s.lines)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		addr, got := recordingBackend(t, "imap", false, "")
		k := forwardKanmon(t, "imap", "none", addr)
		_, line := loginAs(t, k, "alice", k.Passcode("alice", app))
		if !strings.HasPrefix(line, "a1 OK") {
			t.Fatalf("login: %s", line)
		}
		if s := waitSeen(t, got); len(s.lines) != 0 {
			t.Errorf("backend saw %q before the login", s.lines)
		}
	})
}

// The ID that forwards the client goes in one write with the login, as a
// client may pipeline them (RFC 9051 §5.5): the backend gets the
// AUTHENTICATE before it answers the ID, so a login with
// forward_client_ip = "id" costs one round trip, as a direct login does.
func TestForwardIDPipelined(t *testing.T) {
	fake := startTCPServer(t, backendScript(t, nil,
		"S: * OK [CAPABILITY IMAP4rev1 SASL-IR ID] fake",
		"C: k3 ID (...",
		"C: k1 AUTHENTICATE PLAIN ...",
		"S: * ID NIL\r\nk3 OK ID completed.\r\nk1 OK [CAPABILITY IMAP4rev1] Logged in",
	))
	k := forwardKanmon(t, "imap", "id", fake.addr)
	c := dial(t, k.IMAPPlain)
	c.run("S: * OK [CAPABILITY ...", "C: a1 LOGIN alice "+k.Passcode("alice", app), "S: a1 OK [CAPABILITY IMAP4rev1] Logged in")
}
