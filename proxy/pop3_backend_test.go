package proxy_test

import (
	"context"
	"errors"
	"strings"
	"testing"

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
