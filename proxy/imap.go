package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/lineio"
	"github.com/kanmon-mail/kanmon/proxy/backend"
	"github.com/kanmon-mail/kanmon/proxy/imapwire"
)

// Pre-auth capabilities (RFC 9051 §6.1.1). AUTH= is only offered where
// credentials may be sent; before STARTTLS the client sees LOGINDISABLED
// (RFC 9051 §6.2.3) instead.
const (
	imapCapsBase      = "IMAP4rev1 SASL-IR ID LITERAL+"
	imapCapsAuth      = imapCapsBase + " AUTH=PLAIN AUTH=LOGIN"
	imapCapsBeforeTLS = imapCapsBase + " STARTTLS LOGINDISABLED"
)

// imapFront is the pre-auth IMAP conversation on one connection.
type imapFront struct {
	*session
	br *bufio.Reader
	rd *imapwire.Reader
	// tag is the tag of the command in progress, which the shared login
	// steps answer (front).
	tag string
	// loginTried is set by the first LOGIN or AUTHENTICATE: from then on
	// an ID no longer changes the client address.
	loginTried bool
}

// serveIMAP runs the pre-auth front and, after a login, the relay.
func serveIMAP(ctx context.Context, s *session) {
	f := &imapFront{session: s}
	f.setConn(s.conn)
	converse(ctx, s,
		func() error { return f.untagged("OK [CAPABILITY " + f.capabilities() + "] kanmon ready.") },
		func() (*imapwire.Command, error) { return f.rd.ReadCommand() },
		f.readFailed, f.dispatch, f.writeLine)
}

// setConn (re)binds the reader to conn, after accept or STARTTLS.
func (f *imapFront) setConn(conn net.Conn) {
	f.conn = conn
	f.br = bufio.NewReaderSize(conn, 4096)
	f.rd = imapwire.NewReader(f.br, func() error {
		return f.writeLine("+ Ready for literal data")
	})
}

// readFailed answers a parse error or ends the session on an I/O error. It
// reports whether the connection must close.
func (f *imapFront) readFailed(err error) bool {
	var perr *imapwire.Error
	if !errors.As(err, &perr) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			f.goodbyeDeadline()
			if f.shuttingDown() {
				_ = f.writeLine(f.dialect.shuttingDown)
			} else {
				_ = f.writeLine(f.dialect.idle)
			}
		}
		return true
	}
	tag := perr.Tag
	if tag == "" {
		tag = "*"
	}
	_ = f.writeLine(tag + " BAD " + perr.Text)
	if perr.Fatal {
		_ = f.untagged("BYE Cannot continue after that error.")
		return true
	}
	return f.countFailure()
}

// dispatch runs one pre-auth command and reports whether the front is done
// (logout, close, or handed over to the relay).
func (f *imapFront) dispatch(ctx context.Context, cmd *imapwire.Command) bool {
	f.tag = cmd.Tag
	switch cmd.Name {
	case "CAPABILITY":
		return f.untagged("CAPABILITY "+f.capabilities()) != nil || f.tagged(cmd.Tag, "OK CAPABILITY completed.") != nil
	case "NOOP":
		return f.tagged(cmd.Tag, "OK NOOP completed.") != nil
	case "LOGOUT":
		_ = f.untagged("BYE Logging out.")
		_ = f.tagged(cmd.Tag, "OK LOGOUT completed.")
		return true
	case "ID":
		f.noteID(cmd.Args)
		return f.untagged("ID NIL") != nil || f.tagged(cmd.Tag, "OK ID completed.") != nil
	case "STARTTLS":
		return f.startTLS(cmd)
	case "LOGIN":
		return f.cmdLogin(ctx, cmd)
	case "AUTHENTICATE":
		return f.cmdAuthenticate(ctx, cmd)
	}
	return f.bad(cmd.Tag, "Command not allowed before authentication.")
}

// capabilities is the pre-auth CAPABILITY list for the current state.
func (f *imapFront) capabilities() string {
	if f.authAllowed() {
		return imapCapsAuth
	}
	return imapCapsBeforeTLS
}

// bad answers BAD, counts it, and closes after too many.
func (f *imapFront) bad(tag, text string) bool {
	if f.tagged(tag, "BAD "+text) != nil {
		return true
	}
	return f.countFailure()
}

// no answers text (NO or BAD, from the dialect), counts it, and closes
// after too many.
func (f *imapFront) no(tag, text string) bool {
	if f.tagged(tag, text) != nil {
		return true
	}
	return f.countFailure()
}

func (f *imapFront) countFailure() bool {
	if f.fail() {
		_ = f.writeLine(f.dialect.tooManyErrors)
		return true
	}
	return false
}

// refuse answers the command in progress with line and counts it (front).
func (f *imapFront) refuse(line string) bool { return f.no(f.tag, line) }

// reply answers the command in progress with line (front).
func (f *imapFront) reply(line string) error { return f.tagged(f.tag, line) }

// loggedIn is the tagged OK with the backend's capabilities (front).
func (f *imapFront) loggedIn(b *backend.Login) string {
	return "OK [CAPABILITY " + b.Capability + "] Logged in"
}

// reader holds what the client pipelined past its login (front).
func (f *imapFront) reader() *bufio.Reader { return f.br }

// startTLS upgrades the connection. Bytes the client pipelined after the
// STARTTLS line were sent in clear text and are discarded, never executed
// after the handshake (CVE-2011-0411).
func (f *imapFront) startTLS(cmd *imapwire.Command) bool {
	if f.tls || f.spec.TLS != config.TLSStartTLS {
		return f.bad(cmd.Tag, "STARTTLS is not available here.")
	}
	if len(cmd.Args) != 0 {
		return f.bad(cmd.Tag, "STARTTLS takes no arguments.")
	}
	if f.tagged(cmd.Tag, "OK Begin TLS negotiation now.") != nil {
		return true
	}
	tc := f.upgradeTLS(f.br, "STARTTLS")
	if tc == nil {
		return true
	}
	f.setConn(tc)
	return false
}

// cmdLogin handles LOGIN user password (RFC 9051 §6.2.3).
func (f *imapFront) cmdLogin(ctx context.Context, cmd *imapwire.Command) bool {
	if !f.authAllowed() {
		return f.no(cmd.Tag, f.dialect.privacyRequired)
	}
	if len(cmd.Args) != 2 || !isString(cmd.Args[0]) || !isString(cmd.Args[1]) {
		return f.bad(cmd.Tag, "LOGIN takes a user name and a password.")
	}
	f.loginTried = true
	return f.login(ctx, f, cmd.Args[0].Value, cmd.Args[1].Value)
}

// cmdAuthenticate handles AUTHENTICATE PLAIN and LOGIN, with or without
// an initial response (RFC 9051 §6.2.2, RFC 4959).
func (f *imapFront) cmdAuthenticate(ctx context.Context, cmd *imapwire.Command) bool {
	if !f.authAllowed() {
		return f.no(cmd.Tag, f.dialect.privacyRequired)
	}
	if len(cmd.Args) < 1 || len(cmd.Args) > 2 || cmd.Args[0].Kind != imapwire.Atom {
		return f.bad(cmd.Tag, "AUTHENTICATE takes a mechanism and an optional initial response.")
	}
	var initial *string
	if len(cmd.Args) == 2 {
		if cmd.Args[1].Kind != imapwire.Atom {
			return f.bad(cmd.Tag, "Invalid initial response.")
		}
		initial = &cmd.Args[1].Value
	}
	user, secret, err := saslCredentials(cmd.Args[0].Value, initial, func(challenge string) (string, error) {
		if err := f.writeLine("+ " + challenge); err != nil {
			return "", err
		}
		return f.rd.ReadLine()
	})
	if err == nil {
		f.loginTried = true
		return f.login(ctx, f, user, secret)
	}
	if line, ok := f.saslRefusal(err, user); ok {
		return f.no(cmd.Tag, line)
	}
	var perr *imapwire.Error
	if errors.As(err, &perr) {
		// A response line too long (fatal: its rest cannot be told
		// from the next command) or ending in a bare LF.
		perr.Tag = cmd.Tag
	}
	return f.readFailed(err)
}

// noteID keeps the client's "name" and "version" from ID (RFC 2971) for
// the log, cut short and stripped of anything but printable ASCII, and
// hands "x-originating-ip" and "x-originating-port" to originatingID.
func (f *imapFront) noteID(args []imapwire.Arg) {
	if len(args) != 1 || args[0].Kind != imapwire.List {
		return
	}
	var name, version string
	var origIP, origPort *string
	l := args[0].List
	for i := 0; i+1 < len(l); i += 2 {
		v := &l[i+1].Value
		if l[i+1].Kind == imapwire.Nil {
			v = new(string)
		}
		switch strings.ToLower(l[i].Value) {
		case "name":
			name = lineio.Printable(*v, 40)
		case "version":
			version = lineio.Printable(*v, 20)
		case "x-originating-ip":
			origIP = v
		case "x-originating-port":
			origPort = v
		}
	}
	f.clientID = strings.TrimSpace(name + " " + version)
	f.clientName, f.clientVersion = strings.TrimSpace(name), strings.TrimSpace(version)
	if origIP != nil || origPort != nil {
		f.originatingID(origIP, origPort)
	}
}

// isString reports whether a is an astring (atom, quoted or literal).
func isString(a imapwire.Arg) bool {
	return a.Kind == imapwire.Atom || a.Kind == imapwire.Quoted || a.Kind == imapwire.Literal || a.Kind == imapwire.Nil
}

func (f *imapFront) untagged(text string) error { return f.writeLine("* " + text) }

func (f *imapFront) tagged(tag, text string) error { return f.writeLine(tag + " " + text) }

func (f *imapFront) writeLine(line string) error {
	if _, err := f.conn.Write([]byte(line + "\r\n")); err != nil {
		return fmt.Errorf("imap write: %w", err)
	}
	return nil
}
