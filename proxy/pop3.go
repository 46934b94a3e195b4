package proxy

import (
	"context"
	"strings"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/lineio"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// pop3MaxAuthLine is the longest SASL client response, CRLF included.
// It is not a command, so RFC 5034 §4 sets no limit; 8 KiB holds any
// PLAIN or LOGIN response with room to spare, as in IMAP. Command lines
// are bounded by lineio.POP3MaxCommandLine (RFC 2449 §4). A longer line is
// refused at the limit and the connection closed, since its rest cannot
// be told from the next command.
const pop3MaxAuthLine = 8192

// Replies of the POP3 front to its own commands; the replies every front
// shares are in its dialect.
const (
	// No "<timestamp>" in the greeting: APOP is not offered (RFC 1939 §7).
	pop3Greeting   = "+OK kanmon ready."
	pop3NotAllowed = "-ERR Command not allowed before authentication."
)

// pop3Mechanisms are the SASL mechanisms offered, in CAPA and AUTH.
var pop3Mechanisms = []string{"PLAIN", "LOGIN"}

// pop3Front is the pre-auth POP3 conversation on one connection.
type pop3Front struct {
	lineFront
	// user is the name of a USER command waiting for its PASS.
	user string
}

// servePOP3 runs the pre-auth POP3 front and, after a login, the relay.
func servePOP3(ctx context.Context, s *session) {
	f := &pop3Front{lineFront: lineFront{session: s, proto: "pop3"}}
	f.setConn(s.conn)
	converse(ctx, s,
		func() error { return f.reply(pop3Greeting) },
		func() (string, error) { return f.lr.ReadLine(lineio.POP3MaxCommandLine) },
		func(err error) bool { f.endRead(err, f.dialect.lineTooLong); return true },
		f.dispatch, f.reply)
}

// dispatch runs one pre-auth command and reports whether the front is done
// (QUIT, close, or handed over to the relay).
func (f *pop3Front) dispatch(ctx context.Context, line string) bool {
	name, arg, _ := strings.Cut(line, " ")
	name = strings.ToUpper(name)
	if name != "PASS" {
		f.user = ""
	}
	if strings.IndexByte(line, 0) >= 0 {
		// Passed on, a NUL would shift the fields of the backend's
		// PLAIN login (RFC 4616 §2).
		return f.failed("-ERR NUL is not allowed in a command.")
	}
	switch name {
	case "CAPA":
		return f.reply("+OK Capability list follows.\r\n"+strings.Join(f.capabilities(), "\r\n")+"\r\n.") != nil
	case "NOOP":
		return f.reply("+OK") != nil
	case "QUIT":
		_ = f.reply("+OK Logging out.")
		return true
	case "STLS":
		return f.startTLS(arg)
	case "USER":
		return f.cmdUser(arg)
	case "PASS":
		return f.cmdPass(ctx, arg)
	case "AUTH":
		return f.cmdAuth(ctx, arg)
	case "APOP":
		return f.failed("-ERR APOP is not supported; use USER and PASS or AUTH.")
	}
	return f.failed(pop3NotAllowed)
}

// capabilities is the pre-auth CAPA list (RFC 2449 §5) for the current
// state: what this front supports, not what the backend does after login.
// PIPELINING holds because commands are answered in order and any that
// follow a login are handed to the backend.
func (f *pop3Front) capabilities() []string {
	caps := []string{"RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if f.authAllowed() {
		return append(caps, "USER", "SASL "+strings.Join(pop3Mechanisms, " "))
	}
	if f.spec.TLS == config.TLSStartTLS {
		caps = append(caps, "STLS")
	}
	return caps
}

// failed answers an -ERR for a bad or failed command, counts it, and
// reports whether the client has used up its allowance (then the
// connection closes).
func (f *pop3Front) failed(reply string) bool {
	if f.reply(reply) != nil {
		return true
	}
	if f.fail() {
		f.log.Debug("closing after too many invalid commands")
		return true
	}
	return false
}

// startTLS upgrades the connection (RFC 2595 §4). Bytes the client
// pipelined after the STLS line were sent in clear text and are discarded,
// never executed after the handshake (CVE-2011-0411).
func (f *pop3Front) startTLS(arg string) bool {
	if f.tls || f.spec.TLS != config.TLSStartTLS {
		return f.failed("-ERR STLS is not available here.")
	}
	if arg != "" {
		return f.failed("-ERR STLS takes no arguments.")
	}
	return f.startTLSWith("+OK Begin TLS negotiation now.", "STLS")
}

// cmdUser takes the user name for the PASS that follows (RFC 1939 §7). It
// says +OK for every name: whether one exists is nobody's business.
func (f *pop3Front) cmdUser(name string) bool {
	if !f.authAllowed() {
		return f.failed(f.dialect.privacyRequired)
	}
	if name == "" {
		return f.failed("-ERR USER takes a user name.")
	}
	f.user = name
	return f.reply("+OK Send your password.") != nil
}

// cmdPass logs in with the USER name. The password is the rest of the
// line, spaces and all (RFC 1939 §7), so a passcode typed in groups works.
func (f *pop3Front) cmdPass(ctx context.Context, secret string) bool {
	user := f.user
	f.user = ""
	switch {
	case !f.authAllowed():
		return f.failed(f.dialect.privacyRequired)
	case user == "":
		return f.failed("-ERR Send USER first.")
	}
	return f.login(ctx, f, user, secret)
}

// cmdAuth handles AUTH (RFC 5034): "AUTH mechanism [initial-response]",
// and "AUTH" alone, which lists the mechanisms as Dovecot does and some
// clients (Outlook) expect.
func (f *pop3Front) cmdAuth(ctx context.Context, arg string) bool {
	if !f.authAllowed() {
		return f.failed(f.dialect.privacyRequired)
	}
	if arg == "" {
		return f.reply("+OK\r\n"+strings.Join(pop3Mechanisms, "\r\n")+"\r\n.") != nil
	}
	done, err := f.sasl(ctx, f, "+ ", pop3MaxAuthLine, arg)
	if err != nil {
		f.endRead(err, f.dialect.lineTooLong)
	}
	return done
}

// refuse answers a failed login or SASL exchange (front).
func (f *pop3Front) refuse(line string) bool { return f.failed(line) }

// loggedIn is the +OK after a login (front).
func (f *pop3Front) loggedIn(*backend.Login) string { return "+OK Logged in." }
