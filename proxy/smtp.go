package proxy

import (
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/lineio"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// The SMTP submission front speaks SMTP only until AUTH succeeds. Then it
// has logged into the backend (smtp_backend.go) and relays bytes both
// ways, so every reply after AUTH, the 250 for a message included, is the
// backend's own: kanmon cannot acknowledge a message the backend did not
// accept, and buffers none. Before AUTH its EHLO reply mirrors the
// backend's extensions (cached per backend), so that the client uses
// what the backend implements: PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
// CHUNKING, DSN and the rest work through the relay.

// smtpMaxAuthLine is the longest AUTH command line with its initial
// response, and the longest SASL response, CRLF included. RFC 4954 §4
// asks a server to take the longest response its mechanisms produce,
// whatever its other line limits; 12288 octets is what many servers
// allow, far more than any PLAIN or LOGIN response needs. Other command
// lines are bounded by lineio.SMTPMaxCommandLine (RFC 5321 §4.5.3.1.4),
// and mirrored EHLO lines by lineio.SMTPMaxReplyLine. A line longer than
// its limit is cut off there and the connection closed, since its rest
// cannot be told from the next command.
const smtpMaxAuthLine = 12288

// Replies of the SMTP front to its own commands (RFC 5321 §4.2, RFC 4954
// §6, RFC 3207 §4, enhanced codes per RFC 3463); the replies every front
// shares are in its dialect. The front always gives enhanced codes.
const (
	smtpAuthOK          = "235 2.7.0 Authentication successful"
	smtpAuthRequired    = "530 5.7.0 Authentication required"
	smtpHelloFirst      = "503 5.5.1 Send EHLO first"
	smtpAuthSyntax      = "501 5.5.4 Syntax: AUTH mechanism [initial-response]"
	smtpAuthLineTooLong = "500 5.5.6 Authentication Exchange line is too long"
	smtpUnknownCommand  = "500 5.5.2 Command not recognized"
	smtpOK              = "250 2.0.0 OK"
)

// smtpAuthMechanisms is kanmon's own AUTH line in EHLO.
const smtpAuthMechanisms = "AUTH PLAIN LOGIN"

// smtpFront is the pre-auth SMTP conversation on one connection.
type smtpFront struct {
	lineFront
	// The session's helo is the name the backend gets in EHLO: the
	// client's EHLO or HELO name if it is a valid domain or address
	// literal, else kanmon's own. Empty until the client said EHLO or
	// HELO, and again after STARTTLS (RFC 3207 §4.2).
}

// serveSubmission runs the pre-auth SMTP submission front and, after AUTH,
// the relay.
func serveSubmission(ctx context.Context, s *session) {
	f := &smtpFront{lineFront: lineFront{session: s, proto: "smtp"}}
	f.setConn(s.conn)
	converse(ctx, s,
		func() error { return f.reply("220 " + backend.Hostname() + " ESMTP kanmon ready") },
		func() (string, error) { return f.lr.ReadLine(smtpMaxAuthLine) },
		func(err error) bool { f.endRead(err, f.dialect.lineTooLong); return true },
		f.dispatch, f.reply)
}

// dispatch runs one pre-auth command and reports whether the front is done
// (QUIT, close, or handed over to the relay).
func (f *smtpFront) dispatch(ctx context.Context, line string) bool {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	if verb != "AUTH" && len(line)+len("\r\n") > lineio.SMTPMaxCommandLine {
		return f.failed(f.dialect.lineTooLong)
	}
	switch verb {
	case "EHLO", "HELO":
		return f.hello(ctx, verb, arg)
	case "STARTTLS":
		return f.startTLS(arg)
	case "AUTH":
		return f.cmdAuth(ctx, arg)
	case "NOOP", "RSET":
		return f.reply(smtpOK) != nil
	case "HELP":
		return f.reply("214 2.0.0 Send EHLO, then AUTH; the mail server takes over after that") != nil
	case "QUIT":
		_ = f.reply("221 2.0.0 Bye")
		return true
	case "MAIL", "RCPT", "DATA", "VRFY", "EXPN", "ETRN", "BURL":
		return f.failed(smtpAuthRequired)
	case "BDAT":
		return f.bdat(arg)
	}
	return f.failed(smtpUnknownCommand)
}

// failed answers a bad or failed command, counts it, and after too many
// says 421 and reports that the connection must close.
func (f *smtpFront) failed(reply string) bool {
	if f.reply(reply) != nil {
		return true
	}
	if f.fail() {
		_ = f.reply(f.dialect.tooManyErrors)
		return true
	}
	return false
}

// hello answers EHLO (RFC 5321 §4.1.1.1) with the backend's extensions
// and kanmon's STARTTLS and AUTH, or HELO with a plain 250.
func (f *smtpFront) hello(ctx context.Context, verb, arg string) bool {
	name := strings.TrimSpace(arg)
	if name == "" {
		return f.failed("501 5.5.4 Syntax: " + verb + " hostname")
	}
	f.helo = smtpClientName(name)
	f.clientName = ""
	if backend.ValidHeloName(name) {
		f.clientName = lineio.Printable(name, 64)
	}
	if verb == "HELO" {
		return f.reply("250 "+backend.Hostname()) != nil
	}
	lines := []string{backend.Hostname()}
	for _, ext := range f.backendExtensions(ctx) {
		if smtpMirrored(ext) {
			lines = append(lines, ext)
		}
	}
	if !f.tls && f.spec.TLS == config.TLSStartTLS {
		lines = append(lines, "STARTTLS")
	}
	if f.authAllowed() {
		lines = append(lines, smtpAuthMechanisms)
	}
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		b.WriteString("250" + sep + l + "\r\n")
	}
	_, err := io.WriteString(f.conn, b.String())
	return err != nil
}

// backendExtensions is the backend's EHLO extension list, from the cache
// or a probe; a safe minimal list when the backend cannot be asked.
func (f *smtpFront) backendExtensions(ctx context.Context) []string {
	exts, err := f.rt.Backends[f.spec.Protocol].SubmissionExtensions(ctx)
	if err != nil {
		f.log.Warn("backend EHLO probe failed; advertising the last known or a minimal extension list", "err", err)
	}
	return exts
}

// smtpMirrored reports whether a backend EHLO line goes into kanmon's EHLO
// reply. AUTH and STARTTLS are kanmon's own business with the client, and
// local extensions, the keywords that begin with X (RFC 5321 §4.1.5;
// XCLIENT and XFORWARD among them), are kanmon's business with the
// backend. A line that is not a well-formed keyword with printable
// parameters, or too long for a reply line, is dropped.
func smtpMirrored(ext string) bool {
	keyword, params, _ := strings.Cut(ext, " ")
	keyword = strings.ToUpper(keyword)
	switch {
	case keyword == "" || len(ext) > lineio.SMTPMaxReplyLine-len("250-\r\n"):
		return false
	case keyword == "AUTH", keyword == "STARTTLS", strings.HasPrefix(keyword, "AUTH="), keyword[0] == 'X':
		return false
	}
	for i := 0; i < len(keyword); i++ {
		c := keyword[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return lineio.Printable(params, len(params)) == params
}

// startTLS upgrades the connection (RFC 3207). Bytes the client pipelined
// after the STARTTLS line were sent in clear text and are discarded,
// never executed after the handshake (CVE-2011-0411). Whatever the client
// said before, its EHLO included, no longer counts (RFC 3207 §4.2).
func (f *smtpFront) startTLS(arg string) bool {
	switch {
	case f.tls:
		return f.failed("503 5.5.1 TLS already active")
	case f.spec.TLS != config.TLSStartTLS:
		return f.failed("502 5.5.1 STARTTLS is not available here")
	case arg != "":
		return f.failed("501 5.5.4 Syntax error (no parameters allowed)")
	}
	f.helo = "" // the client must say EHLO again (RFC 3207 §4.2)
	return f.startTLSWith("220 2.0.0 Ready to start TLS", "STARTTLS")
}

// cmdAuth handles AUTH PLAIN and LOGIN, with or without an initial
// response (RFC 4954 §4).
func (f *smtpFront) cmdAuth(ctx context.Context, arg string) bool {
	if !f.authAllowed() {
		return f.failed(f.dialect.privacyRequired)
	}
	if f.helo == "" {
		return f.failed(smtpHelloFirst)
	}
	if mech, _, _ := strings.Cut(arg, " "); mech == "" {
		return f.failed(smtpAuthSyntax)
	}
	done, err := f.sasl(ctx, f, "334 ", smtpMaxAuthLine, arg)
	if err != nil {
		f.endRead(err, smtpAuthLineTooLong)
	}
	return done
}

// refuse answers a failed login or SASL exchange (front).
func (f *smtpFront) refuse(line string) bool { return f.failed(line) }

// loggedIn is the 235 after AUTH (front).
func (f *smtpFront) loggedIn(*backend.Login) string { return smtpAuthOK }

// bdat refuses BDAT before AUTH. Its chunk follows the command without
// waiting for a reply (RFC 3030 §2), so the chunk is read and discarded
// first, never taken for commands; memory stays bounded and the pre-auth
// deadline bounds the time. A size that does not parse leaves no way to
// find the next command, so the connection closes.
func (f *smtpFront) bdat(arg string) bool {
	sizeArg, _, _ := strings.Cut(arg, " ")
	size, err := strconv.ParseInt(sizeArg, 10, 64)
	if err != nil || size < 0 {
		_ = f.reply("501 5.5.4 Syntax: BDAT size [LAST]")
		return true
	}
	if _, err := io.CopyN(io.Discard, f.lr.Buffered(), size); err != nil {
		f.endRead(err, f.dialect.lineTooLong)
		return true
	}
	return f.failed(smtpAuthRequired)
}

// smtpClientName is the client's EHLO or HELO argument if it is a domain
// or an address literal (RFC 5321 §4.1.3), which the backend then gets in
// its EHLO; anything else is replaced by kanmon's own name.
func smtpClientName(name string) string {
	if backend.ValidHeloName(name) {
		return name
	}
	return backend.Hostname()
}
