package proxy_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// pop3LoginAs logs in at addr with USER and PASS and returns the reply to
// PASS.
func pop3LoginAs(t *testing.T, addr, user, secret string) string {
	t.Helper()
	c := dial(t, addr)
	c.run("S: "+pop3Greeting, "C: USER "+user, "S: +OK Send your password.", "C: PASS "+secret)
	return c.line()
}

// A backend's temporary failure gets the client [SYS/TEMP], never [AUTH];
// the backend's [IN-USE] and [LOGIN-DELAY] reach the client as they are
// (down, silent, master refused: TestFrontsBackendUnavailable).
func TestPOP3BackendUnavailable(t *testing.T) {
	t.Run("IN-USE", func(t *testing.T) {
		w := newPOP3World(t, worldOptions{})
		c := dial(t, w.k.POP3Plain)
		c.run(
			"S: "+pop3Greeting,
			"C: AUTH PLAIN "+plainIR("", "dave", davePW),
			"S: "+pop3InUseReply,
			"C: NOOP",
			"S: +OK",
		)
		wantLog(t, w.k, "backend refused the login")
	})
	for _, tc := range []struct{ name, reply, want string }{
		{"LOGIN-DELAY", "-ERR [LOGIN-DELAY] Wait 300 seconds between logins.", "-ERR [LOGIN-DELAY] Wait 300 seconds between logins."},
		{"IN-USE with control bytes", "-ERR [IN-USE] \x1b[31mred\x1b[0m\ttext", "-ERR [IN-USE] [31mred[0mtext"},
		{"IN-USE too long", "-ERR [IN-USE] " + strings.Repeat("x", 600), "-ERR [IN-USE] " + strings.Repeat("x", 510-len("-ERR [IN-USE] "))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := startTCPServer(t, backendScript(t, nil, "S: +OK ready", "C: AUTH PLAIN ...", "S: "+tc.reply))
			k := kanmonAt(t, protoPOP3, fake.addr, worldOptions{})
			if got, want := pop3LoginAs(t, k.POP3Plain, "alice", k.Passcode("alice", app)), tc.want; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
	for _, tc := range []struct{ name, reply string }{
		{"SYS/TEMP", "-ERR [SYS/TEMP] Internal error occurred."},
		{"SYS/PERM", "-ERR [SYS/PERM] Mailbox is corrupted."},
		{"unknown code", "-ERR [X-FOO] Something."},
		{"not -ERR", "* what"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := startTCPServer(t, backendScript(t, nil, "S: +OK ready", "C: AUTH PLAIN ...", "S: "+tc.reply))
			k := kanmonAt(t, protoPOP3, fake.addr, worldOptions{})
			l := k.POP3Plain
			if got := pop3LoginAs(t, l, "alice", k.Passcode("alice", app)); got != pop3Unavailable {
				t.Errorf("passcode login: got %q, want %q", got, pop3Unavailable)
			}
			if got := pop3LoginAs(t, l, "carol", carolPW); got != pop3Unavailable {
				t.Errorf("passthrough login: got %q, want %q", got, pop3Unavailable)
			}
			if strings.Contains(k.Logs(), "level=ERROR") {
				t.Errorf("a temporary backend failure is logged as an ERROR:\n%s", k.Logs())
			}
		})
	}
}

// backendLogin calls Login directly on b, a POP3 backend unless its
// Protocol says otherwise. On failure the Login is empty and the error a
// *LoginError.
func backendLogin(t *testing.T, b *backend.Backend, cred backend.Credentials) (*backend.Login, *backend.LoginError) {
	t.Helper()
	if b.Protocol == "" {
		b.Protocol = config.ProtocolPOP3
	}
	if b.Timeout == 0 {
		b.Timeout = ioTimeout
	}
	l, err := b.Login(context.Background(), cred)
	if err == nil {
		t.Cleanup(func() { l.Conn.Close() })
		return l, nil
	}
	var le *backend.LoginError
	if !errors.As(err, &le) {
		t.Fatalf("Login error %T is not a *LoginError: %v", err, err)
	}
	return &backend.Login{}, le
}

var masterCred = backend.Credentials{Authzid: "alice", Authcid: masterUser, Password: masterPW}

// The backend login on its own: STLS, the AUTH PLAIN forms, the bytes
// handed over, and how replies are classified.
func TestPOP3BackendLogin(t *testing.T) {
	cert, clientTLS := backendCert(t)
	long := strings.Repeat("p", 300)
	wantLogins(t, backendLogin, cert, clientTLS, []loginSuccess{
		{"STLS, initial response, bytes past the login", "starttls", []string{
			"S: +OK ready", "C: STLS", "S: +OK Begin TLS", "TLS",
			"C: AUTH PLAIN " + plainIR("alice", masterUser, masterPW), "S: +OK Logged in.\r\n+OK early",
		}, masterCred, "+OK early\r\n"},
		{"implicit TLS", "implicit", []string{"TLS", "S: +OK ready", "C: AUTH PLAIN ...", "S: +OK Logged in."}, masterCred, ""},
		{"long password in a continuation", "none", []string{
			"S: +OK ready", "C: AUTH PLAIN", "S: + ", "C: " + plainIR("", "carol", long), "S: +OK Logged in.",
		}, backend.Credentials{Authcid: "carol", Password: long}, ""},
	})
	wantLoginFailures(t, backendLogin, clientTLS, []loginFailure{
		{"bytes after STLS +OK", "starttls", []string{"S: +OK ready", "C: STLS", "S: +OK Begin TLS\r\n+OK forged"},
			false, "backend sent data after its STARTTLS reply", ""},
		{"STLS refused", "starttls", []string{"S: +OK ready", "C: STLS", "S: -ERR No TLS here"},
			false, "backend refused STLS", ""},
		{"greeting -ERR", "none", []string{"S: -ERR [SYS/TEMP] Too many connections"},
			false, "backend greeting is not +OK", ""},
		{"AUTH code", "none", []string{"S: +OK ready", "C: AUTH PLAIN ...", "S: -ERR [AUTH] Authentication failed."},
			true, "backend replied", ""},
		{"-ERR without code", "none", []string{"S: +OK ready", "C: AUTH PLAIN ...", "S: -ERR Authentication failed."},
			true, "backend replied", ""},
		{"IN-USE", "none", []string{"S: +OK ready", "C: AUTH PLAIN ...", "S: " + pop3InUseReply},
			false, "backend replied", pop3InUseReply},
		{"continuation after initial response", "none", []string{"S: +OK ready", "C: AUTH PLAIN ...", "S: + "},
			false, "backend replied", ""},
		{"closes after greeting", "none", []string{"S: +OK ready", "CLOSE"}, false, "backend AUTH", ""},
	})
}

// smtpLoginAs logs in at kanmon's plain submission listener with AUTH
// PLAIN and returns the reply.
func smtpLoginAs(t *testing.T, addr, user, secret string) string {
	t.Helper()
	c := dialSMTP(t, addr)
	c.ehlo("client.example.org")
	c.run("C: AUTH PLAIN " + plainIR("", user, secret))
	return c.line()
}

// A backend that is down leaves EHLO with kanmon's minimal list; one that
// is busy gets the client 454 4.7.0, never 535 (the rest of the failures:
// TestFrontsBackendUnavailable).
func TestSMTPBackendUnavailable(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		k := kanmonAt(t, protoSMTP, deadAddr(t), worldOptions{})
		c := dialSMTP(t, k.SubmissionPlain)
		// The probe failed: the minimal list, and kanmon's own AUTH.
		if got, want := c.ehlo("client.example.org")[1:], []string{"PIPELINING", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"}; !slices.Equal(got, want) {
			t.Errorf("EHLO with the backend down: %q, want %q", got, want)
		}
		wantLog(t, k, "backend EHLO probe failed")
	})
	t.Run("temporary failure at the backend", func(t *testing.T) {
		w := newSMTPWorld(t, worldOptions{})
		if got := smtpLoginAs(t, w.k.SubmissionPlain, "dave", davePW); got != smtpUnavailable {
			t.Errorf("got %q, want %q", got, smtpUnavailable)
		}
		wantLog(t, w.k, `backend replied 454 \"4.7.0 Backend is busy\"`)
	})
}

// kanmon's EHLO keeps what the client may use of the backend's list and
// drops the rest: AUTH and STARTTLS (kanmon's own), X- extensions such as
// XCLIENT, malformed lines. The list is probed once and then cached.
func TestSMTPEHLOMirror(t *testing.T) {
	probe := startTCPServer(t, backendScript(t, nil,
		"S: 220-backend.test ESMTP\r\n220 more greeting",
		"C: EHLO ...",
		"S: 250-backend.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n"+
			"250-STARTTLS\r\n250-XCLIENT ADDR NAME\r\n250-XFORWARD NAME\r\n250-8bitmime\r\n250-BAD_KEYWORD\r\n"+
			"250-DELIVERBY 300\r\n250-CTRL \x1b[31m\r\n250-"+strings.Repeat("L", 600)+"\r\n250 DSN",
		"C: QUIT",
		"S: 221 bye",
	))
	k := kanmonAt(t, protoSMTP, probe.addr, worldOptions{})
	want := []string{"PIPELINING", "SIZE 1000", "8bitmime", "DELIVERBY 300", "DSN", "AUTH PLAIN LOGIN"}
	for i := range 3 {
		c := dialSMTP(t, k.SubmissionPlain)
		if got := c.ehlo("client.example.org")[1:]; !slices.Equal(got, want) {
			t.Errorf("EHLO %d: %q, want %q", i, got, want)
		}
	}
	if n := probe.accepts.Load(); n != 1 {
		t.Errorf("backend probed %d times, want once", n)
	}
}

// submissionLogin is backendLogin as a client named client.example.org
// in its EHLO.
func submissionLogin(t *testing.T, b *backend.Backend, cred backend.Credentials) (*backend.Login, *backend.LoginError) {
	t.Helper()
	cred.Client.Helo = "client.example.org"
	b.Protocol = config.ProtocolSubmission
	return backendLogin(t, b, cred)
}

// The backend login on its own: STARTTLS, the AUTH PLAIN forms, the bytes
// handed over, and how replies are classified.
func TestSMTPBackendLogin(t *testing.T) {
	cert, clientTLS := backendCert(t)
	long := strings.Repeat("p", 400)
	logins := wantLogins(t, submissionLogin, cert, clientTLS, []loginSuccess{
		{"STARTTLS, EHLO again, initial response, bytes past the login", "starttls", []string{
			"S: 220 backend.test ESMTP", "C: EHLO client.example.org", "S: 250-backend.test\r\n250-STARTTLS\r\n250 SIZE 1",
			"C: STARTTLS", "S: 220 2.0.0 Go ahead", "TLS",
			"C: EHLO client.example.org", "S: 250-backend.test\r\n250-AUTH PLAIN\r\n250 SIZE 2",
			"C: AUTH PLAIN " + plainIR("alice", masterUser, masterPW), "S: 235 2.7.0 OK\r\n250 early",
		}, masterCred, "250 early\r\n"},
		{"implicit TLS", "implicit", []string{"TLS", "S: 220 ready", "C: EHLO ...", "S: 250 backend.test", "C: AUTH PLAIN ...", "S: 235 2.7.0 OK"}, masterCred, ""},
		{"long password after the 334", "none", []string{
			"S: 220 ready", "C: EHLO ...", "S: 250 backend.test",
			"C: AUTH PLAIN", "S: 334 ", "C: " + plainIR("", "carol", long), "S: 235 2.7.0 OK",
		}, backend.Credentials{Authcid: "carol", Password: long}, ""},
	})
	if l := logins["STARTTLS, EHLO again, initial response, bytes past the login"]; l != nil && !slices.Equal(l.Extensions, []string{"AUTH PLAIN", "SIZE 2"}) {
		t.Errorf("extensions %q: want those after TLS", l.Extensions)
	}
	hello := []string{"S: 220 ready", "C: EHLO ...", "S: 250 backend.test", "C: AUTH PLAIN ..."}
	wantLoginFailures(t, submissionLogin, clientTLS, []loginFailure{
		{"bytes after STARTTLS 220", "starttls", []string{"S: 220 ready", "C: EHLO ...", "S: 250 backend.test", "C: STARTTLS", "S: 220 Go ahead\r\n250 forged"},
			false, "backend sent data after its STARTTLS reply", ""},
		{"STARTTLS refused", "starttls", []string{"S: 220 ready", "C: EHLO ...", "S: 250 backend.test", "C: STARTTLS", "S: 454 4.7.0 TLS not available"},
			false, "backend refused STARTTLS: 454", ""},
		{"greeting 554", "none", []string{"S: 554 5.3.2 No service"}, false, "backend greeting is not 220: 554", ""},
		{"EHLO refused", "none", []string{"S: 220 ready", "C: EHLO ...", "S: 550 5.7.1 Go away"}, false, "backend refused EHLO: 550", ""},
		{"malformed reply", "none", []string{"S: 220 ready", "C: EHLO ...", "S: hello?"}, false, "malformed reply line", ""},
		{"codes differ between lines", "none", []string{"S: 220-ready\r\n250 ready"}, false, "malformed reply line", ""},
		{"535", "none", append(hello, "S: 535 5.7.8 Authentication credentials invalid"), true, "backend replied 535", ""},
		{"454", "none", append(hello, "S: 454 4.7.0 Temporary authentication failure"), false, "backend replied 454", ""},
		{"534 mechanism too weak", "none", append(hello, "S: 534 5.7.9 Authentication mechanism is too weak"), false, "backend replied 534", ""},
		{"538 encryption required", "none", append(hello, "S: 538 5.7.11 Encryption required"), false, "backend replied 538", ""},
		{"334 after an initial response", "none", append(hello, "S: 334 "), false, "backend replied 334", ""},
		{"endless reply", "none", []string{"S: 220 ready", "C: EHLO ...", "S: " + strings.Repeat("250-X\r\n", 200)}, false, "reply longer than", ""},
		{"closes after greeting", "none", []string{"S: 220 ready", "CLOSE"}, false, "backend EHLO", ""},
	})
}

// forward_client_ip = "xclient": the client's address goes to the backend
// in XCLIENT, with the attributes its EHLO lists, and EHLO is said again
// after the backend's new 220; a backend that does not offer XCLIENT or
// refuses it fails the login, temporarily.
func TestSMTPBackendXCLIENT(t *testing.T) {
	v4 := backend.ClientInfo{Addr: netip.MustParseAddrPort("192.0.2.7:40000"), Session: "s1"}
	v6 := backend.ClientInfo{Addr: netip.MustParseAddrPort("[2001:db8::7]:40000"), Session: "s1"}
	ehlo := func(xclient string) string {
		return "S: 250-backend.test\r\n250-XCLIENT " + xclient + "\r\n250 AUTH PLAIN"
	}
	for _, tc := range []struct {
		name   string
		client backend.ClientInfo
		steps  []string
		detail string // "" for success
	}{
		{"IPv4, SESSION not offered", v4, []string{ehlo("NAME ADDR PORT"), "C: XCLIENT ADDR=192.0.2.7 PORT=40000", "S: 220 again",
			"C: EHLO client.example.org", "S: 250 backend.test", "C: AUTH PLAIN ...", "S: 235 2.7.0 OK"}, ""},
		{"IPv6, all offered", v6, []string{ehlo("ADDR PORT SESSION"), "C: XCLIENT ADDR=IPV6:2001:db8::7 PORT=40000 SESSION=s1", "S: 220 again",
			"C: EHLO client.example.org", "S: 250 backend.test", "C: AUTH PLAIN ...", "S: 235 2.7.0 OK"}, ""},
		{"client unknown: nothing to forward", backend.ClientInfo{}, []string{"S: 250 backend.test", "C: AUTH PLAIN ...", "S: 235 2.7.0 OK"}, ""},
		{"not offered", v4, []string{"S: 250-backend.test\r\n250 AUTH PLAIN"}, "backend does not offer XCLIENT"},
		{"no ADDR", v4, []string{ehlo("NAME HELO")}, "backend does not offer XCLIENT"},
		{"refused", v4, []string{ehlo("ADDR PORT"), "C: XCLIENT ...", "S: 550 5.7.14 You are not from trusted IP"}, "backend refused XCLIENT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := startTCPServer(t, backendScript(t, nil, append([]string{"S: 220 ready", "C: EHLO client.example.org"}, tc.steps...)...))
			cred := masterCred
			cred.Client = tc.client
			_, le := submissionLogin(t, &backend.Backend{Address: fake.addr, ForwardClientIP: "xclient"}, cred)
			switch {
			case tc.detail == "" && le != nil:
				t.Fatal(le)
			case tc.detail != "" && (le == nil || le.AuthFailed || !strings.Contains(le.Error(), tc.detail)):
				t.Errorf("got %v, want an unavailable error with %q", le, tc.detail)
			}
		})
	}
}

// max_sessions_per_user_ip: a login over the cap gets 454 and stays
// unauthenticated; the backend connection it made is closed.
func TestSMTPSessionLimit(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{extra: "max_sessions_per_user_ip = 1"})
	first := dialSMTP(t, w.k.SubmissionPlain)
	first.smtpLogin("alice", w.passcode)
	c := dialSMTP(t, w.k.SubmissionPlain)
	c.ehlo("client.example.org")
	c.run(
		"C: AUTH PLAIN "+plainIR("", "alice", w.passcode),
		"S: 454 4.7.0 Maximum number of connections from user+IP exceeded",
		"C: MAIL FROM:<alice@example.org>",
		"S: "+smtpAuthNeeded,
	)
	expectSMTPSession(t, w, first, "alice")
	first.conn.Close() // else the relay waits out its close grace
	// The slot is free once kanmon has seen the first session end. Retries
	// are not counted as failures.
	deadline := time.Now().Add(ioTimeout)
	for {
		c.run("C: AUTH PLAIN " + plainIR("", "alice", w.passcode))
		if c.line() == smtpAuthOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session limit did not let go after the first session ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	expectSMTPSession(t, w, c, "alice")
}
