package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

// Line limits of the POP3 front. Memory is bounded by them, never by what
// a client sends: a longer line is refused at the limit and the
// connection closed, since its rest cannot be told from the next command.
const (
	// pop3MaxCommandLine is the longest command line, CRLF included
	// (RFC 2449 §4). An AUTH command with its initial response must fit
	// too (RFC 5034 §4).
	pop3MaxCommandLine = 255
	// pop3MaxResponseLine is the longest response line, CRLF included
	// (RFC 2449 §4).
	pop3MaxResponseLine = 512
	// pop3MaxAuthLine is the longest SASL client response, CRLF included.
	// It is not a command, so RFC 5034 §4 sets no limit; 8 KiB holds any
	// PLAIN or LOGIN response with room to spare, as in IMAP.
	pop3MaxAuthLine = 8192
)

// Replies of the POP3 front. Codes are RFC 2449 §8 and RFC 3206.
const (
	// No "<timestamp>" in the greeting: APOP is not offered (RFC 1939 §7).
	pop3Greeting    = "+OK kanmon ready."
	pop3FailedReply = "-ERR [AUTH] " + auth.FailureText
	pop3Unavailable = "-ERR [SYS/TEMP] Login is temporarily unavailable. Please try again later."
	// Not [AUTH]: with AUTH-RESP-CODE that would say the credentials
	// are wrong (RFC 3206 §6).
	pop3PrivacyReply = "-ERR Use STLS before logging in."
	pop3NotAllowed   = "-ERR Command not allowed before authentication."
)

// pop3Mechanisms are the SASL mechanisms offered, in CAPA and AUTH.
var pop3Mechanisms = []string{"PLAIN", "LOGIN"}

// errPOP3LineTooLong is a line over its limit.
var errPOP3LineTooLong = errors.New("pop3: line too long")

// pop3Front is the pre-auth POP3 conversation on one connection.
type pop3Front struct {
	*session
	br *bufio.Reader
	// line is the current line, reused; at most pop3MaxAuthLine long.
	line []byte
	// user is the name of a USER command waiting for its PASS.
	user string
}

// servePOP3 runs the pre-auth POP3 front and, after a login, the relay.
func servePOP3(ctx context.Context, s *session) {
	f := &pop3Front{session: s}
	f.setConn(s.conn)
	f.preAuthDeadline()
	if err := f.reply(pop3Greeting); err != nil {
		return
	}
	for !contextDone(ctx) {
		f.preAuthDeadline()
		line, err := f.readLine(pop3MaxCommandLine)
		if err != nil {
			f.readFailed(err)
			return
		}
		if done := f.dispatch(ctx, line); done {
			return
		}
	}
	_ = f.reply("-ERR Server shutting down.")
}

// setConn (re)binds the reader to conn, after accept or STLS.
func (f *pop3Front) setConn(conn net.Conn) {
	f.conn = conn
	f.br = bufio.NewReaderSize(conn, 4096)
}

// readLine reads one line of at most limit octets with its line end, and
// returns it without CRLF (a bare LF ends a line too). A longer line is
// errPOP3LineTooLong; no more of it is read.
func (f *pop3Front) readLine(limit int) (string, error) {
	f.line = f.line[:0]
	for {
		chunk, err := f.br.ReadSlice('\n')
		if len(f.line)+len(chunk) > limit {
			return "", errPOP3LineTooLong
		}
		f.line = append(f.line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		line := strings.TrimSuffix(string(f.line[:len(f.line)-1]), "\r")
		return line, nil
	}
}

// readFailed says goodbye after a read error where one is due: a line
// too long, an idle client, shutdown.
func (f *pop3Front) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errPOP3LineTooLong):
		_ = f.reply("-ERR Line too long.")
	case errors.As(err, &ne) && ne.Timeout():
		f.goodbyeDeadline()
		if f.shuttingDown() {
			_ = f.reply("-ERR Server shutting down.")
		} else {
			_ = f.reply("-ERR Disconnected for inactivity.")
		}
	}
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
	if f.reply("+OK Begin TLS negotiation now.") != nil {
		return true
	}
	tc := f.upgradeTLS(f.br, "STLS")
	if tc == nil {
		return true
	}
	f.setConn(tc)
	return false
}

// cmdUser takes the user name for the PASS that follows (RFC 1939 §7). It
// says +OK for every name: whether one exists is nobody's business.
func (f *pop3Front) cmdUser(name string) bool {
	if !f.authAllowed() {
		return f.failed(pop3PrivacyReply)
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
		return f.failed(pop3PrivacyReply)
	case user == "":
		return f.failed("-ERR Send USER first.")
	}
	return f.login(ctx, user, secret)
}

// cmdAuth handles AUTH (RFC 5034): "AUTH mechanism [initial-response]",
// and "AUTH" alone, which lists the mechanisms as Dovecot does and some
// clients (Outlook) expect.
func (f *pop3Front) cmdAuth(ctx context.Context, arg string) bool {
	if !f.authAllowed() {
		return f.failed(pop3PrivacyReply)
	}
	if arg == "" {
		return f.reply("+OK\r\n"+strings.Join(pop3Mechanisms, "\r\n")+"\r\n.") != nil
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	var initial *string
	if hasIR {
		initial = &ir
	}
	user, secret, err := saslCredentials(mech, initial, func(challenge string) (string, error) {
		if err := f.reply("+ " + challenge); err != nil {
			return "", err
		}
		f.preAuthDeadline()
		return f.readLine(pop3MaxAuthLine)
	})
	switch {
	case err == nil:
		return f.login(ctx, user, secret)
	case errors.Is(err, errSASLAuthzid):
		f.log.Info("login failed", "user", user, "reason", "PLAIN authzid differs from authcid")
		return f.failed(pop3FailedReply)
	case errors.Is(err, errSASLMechanism):
		return f.failed("-ERR Unsupported authentication mechanism.")
	case errors.Is(err, errSASLCancelled):
		return f.failed("-ERR AUTH cancelled.")
	case errors.Is(err, errSASLBase64):
		return f.failed("-ERR Invalid base64 in AUTH response.")
	case errors.Is(err, errSASLMalformed):
		return f.failed("-ERR Malformed AUTH response.")
	}
	f.readFailed(err)
	return true
}

// login decides, logs into the backend, answers the client and relays.
func (f *pop3Front) login(ctx context.Context, user, secret string) bool {
	var backend Endpoint
	var refusal *POP3Refusal
	outcome, log := f.authenticate(ctx, user, secret, func(ctx context.Context, b *Backend, cred Credentials) error {
		var err error
		backend, err = b.LoginPOP3(ctx, cred)
		_ = errors.As(err, &refusal) // keeps [IN-USE] or [LOGIN-DELAY] for the reply
		return err
	})
	switch {
	case outcome == outcomeFailed:
		return f.failed(pop3FailedReply)
	case outcome == outcomeUnavailable && refusal != nil:
		return f.failed(refusal.Line)
	case outcome == outcomeUnavailable:
		return f.failed(pop3Unavailable)
	}
	if !f.admitSession() {
		backend.Conn.Close()
		return f.reply(pop3SessionLimit) != nil
	}
	if err := f.reply("+OK Logged in."); err != nil {
		backend.Conn.Close()
		return true
	}
	f.relay(ctx, log, f.clientEndpoint(f.br), backend)
	return true
}

// reply sends one response (several lines for a multi-line one) and CRLF.
func (f *pop3Front) reply(text string) error {
	if _, err := f.conn.Write([]byte(text + "\r\n")); err != nil {
		return fmt.Errorf("pop3 write: %w", err)
	}
	return nil
}

// Helpers every front needs the same way. They belong with session (and
// imap.go has its own copies of them); they live here until they move.
