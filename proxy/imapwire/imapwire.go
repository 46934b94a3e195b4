// Package imapwire reads the few IMAP commands a client may send before it
// has authenticated (CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN,
// AUTHENTICATE), following the grammar of RFC 9051 and RFC 3501.
//
// go-imap v2 keeps its wire parser internal, so kanmon carries this small,
// strict reader of its own. After login the proxy relays raw bytes, so the
// reader never consumes more than the command it returns: whatever the client
// pipelined behind it stays in the bufio.Reader (see bufio.Reader.Buffered),
// where the proxy can discard it (after STARTTLS) or hand it to the relay
// (after login).
//
// Memory is bounded by constants, never by a size the client declares: a
// command line, together with the literals it carries, holds at most
// MaxLineBytes, and a literal is refused before its continuation request is
// sent when it could not fit.
//
// Client protocol errors are returned as *Error, whose Text is fixed and safe
// to send back. Every other error (io.EOF, timeouts, a failing continuation
// callback) comes from the connection and is returned as it is.
package imapwire

import (
	"bufio"
	"errors"
	"io"
)

// Limits on what a client may send before it has authenticated.
const (
	// MaxLineBytes is the longest pre-auth command line, CRLF included. It
	// also bounds one whole command: its lines plus the literals it
	// carries. RFC 9051 §4 leaves the limit to the server; RFC 7162 §4
	// recommends accepting lines of at least 8192 octets.
	MaxLineBytes = 8192

	// MaxLiteralBytes is the largest literal accepted before authentication.
	// RFC 7888 §4 lets a server refuse larger literals; a synchronizing one
	// is refused with BAD instead of the continuation request (RFC 9051
	// §7.5), a non-synchronizing one closes the connection.
	MaxLiteralBytes = 8192

	// MaxArgs is the largest number of arguments of one command, not
	// counting the members of a parenthesized list. Pre-auth commands take
	// at most two (LOGIN user password, AUTHENTICATE mechanism response).
	MaxArgs = 16

	// MaxListItems is the largest number of members of a parenthesized list.
	// The only pre-auth list is ID's, which RFC 2971 §3.3 limits to 30
	// field-value pairs, that is 60 strings.
	MaxListItems = 60
)

// ContinuationRequest is the line the continuation callback given to
// NewReader is expected to send before a synchronizing literal.
const ContinuationRequest = "+ Ready for literal data\r\n"

// ArgKind says which kind of IMAP value an Arg holds.
type ArgKind int

// The kinds of argument. RFC 9051 §4 describes each.
const (
	Atom    ArgKind = iota + 1 // atom (ASTRING-CHARs, so "]" is allowed)
	Quoted                     // quoted string, escapes removed
	Literal                    // literal {n} or {n+}, its n bytes
	Nil                        // the atom NIL, in any case
	List                       // parenthesized list of non-list values
)

// String returns the name of the kind, for test output and logs.
func (k ArgKind) String() string {
	switch k {
	case Atom:
		return "Atom"
	case Quoted:
		return "Quoted"
	case Literal:
		return "Literal"
	case Nil:
		return "Nil"
	case List:
		return "List"
	}
	return "ArgKind(?)"
}

// Command is one command read from the client.
type Command struct {
	Tag  string // the tag as sent
	Name string // the command name, upper-cased
	Args []Arg  // the arguments in order; nil when there are none
}

// Arg is one argument of a Command.
type Arg struct {
	Kind ArgKind
	// Value is the text of an Atom, Quoted or Literal argument, decoded
	// (a quoted string without its quotes and escapes). For Nil it is the
	// atom as sent ("NIL", "nil", ...), because NIL is also a valid
	// astring: "LOGIN nil pw" names the user "nil".
	Value string
	// List holds the members of a List argument. Lists do not nest.
	List []Arg
}

// Error is a client protocol error. The proxy replies "<Tag> BAD <Text>",
// or "* BAD <Text>" when Tag is "".
//
// Fatal means the stream cannot be resynchronised (line too long, oversized
// non-synchronizing literal, bad literal after its data was read) and the
// connection must be closed after the reply. When Fatal is false the whole
// erroneous command has been consumed and the next ReadCommand starts at the
// following one.
type Error struct {
	Tag   string // the command's tag, "" when it could not be parsed
	Text  string // fixed, short and safe to send: never echoes client bytes
	Fatal bool   // close the connection after replying
}

// Error returns the reply text with a package prefix, for logs.
func (e *Error) Error() string {
	if e.Fatal {
		return "imapwire: " + e.Text + " (fatal)"
	}
	return "imapwire: " + e.Text
}

// Texts of the errors. They are fixed so that no client byte is echoed.
const (
	textLineTooLong    = "Line too long"
	textCommandTooLong = "Command too long"
	textEmptyLine      = "Empty command line"
	textBareLF         = "Line must end with CRLF"
	textBadTag         = "Invalid tag"
	textNoCommand      = "Missing command name"
	textBadCommand     = "Invalid command name"
	textSyntax         = "Syntax error in arguments"
	textBadQuoted      = "Invalid quoted string"
	textBadLiteralSize = "Invalid literal size"
	textLiteralTooBig  = "Literal too large"
	textLiteral8       = "literal8 not allowed here"
	textLiteralNUL     = "NUL in literal"
	textTooManyArgs    = "Too many arguments"
	textNestedList     = "Nested list not allowed here"
	textTooManyItems   = "Too many list items"
)

// Reader reads pre-auth IMAP commands from a buffered connection. It is not
// safe for concurrent use.
type Reader struct {
	br   *bufio.Reader
	cont func() error
	buf  []byte // the current line, reused; at most MaxLineBytes
	lit  []byte // scratch for literal data, reused; at most MaxLiteralBytes
	used int    // bytes of the current command consumed so far
}

// NewReader reads commands from r. cont is called to send the continuation
// request (ContinuationRequest, "+ Ready for literal data\r\n") before a
// synchronizing literal {n}, once its size has been accepted; it is not called
// for {n+} (LITERAL+, RFC 7888). An error from cont is returned by
// ReadCommand as it is. A nil cont sends nothing.
func NewReader(r *bufio.Reader, cont func() error) *Reader {
	return &Reader{br: r, cont: cont}
}

// ReadCommand reads the next command, with any literals it carries, and
// nothing after its final CRLF. It returns either a Command or an error: a
// *Error for a client protocol error (see Error.Fatal), or the connection's
// error as it is (io.EOF when the client closed between commands,
// io.ErrUnexpectedEOF when it closed inside one).
func (r *Reader) ReadCommand() (*Command, error) {
	r.used = 0
	line, bareLF, err := r.readLine()
	if err != nil {
		var perr *Error
		if errors.As(err, &perr) {
			// The line is too long: still reply with its tag if the
			// part we kept starts with one.
			perr.Tag = leadingTag(r.buf)
		}
		return nil, err
	}
	p := parser{r: r, line: line, bareLF: bareLF}
	cmd, err := p.command()
	if err != nil {
		return nil, err
	}
	return cmd, nil
}

// ReadLine reads one CRLF-terminated line, such as a client response during
// AUTHENTICATE, and returns it without the CRLF. The line, CRLF included, may
// be at most MaxLineBytes long; a longer one is a Fatal *Error. A line ending
// in a bare LF is a non-fatal *Error. The bytes are returned unchecked: the
// caller decodes them (base64 for SASL). Errors have an empty Tag; the caller
// knows the tag of the command in progress and may fill it in.
func (r *Reader) ReadLine() (string, error) {
	r.used = 0
	line, bareLF, err := r.readLine()
	if err != nil {
		return "", err
	}
	if bareLF {
		return "", &Error{Text: textBareLF}
	}
	return string(line), nil
}

// readLine reads the next line of the current command into r.buf and returns
// it without its line terminator. bareLF reports a line ended by LF alone.
// The line may use what is left of the command's MaxLineBytes budget; when it
// would exceed it, readLine stops reading (keeping at most the budget in
// r.buf) and returns a Fatal *Error. It consumes nothing past the LF.
func (r *Reader) readLine() (line []byte, bareLF bool, err error) {
	limit := MaxLineBytes - r.used
	r.buf = r.buf[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if room := limit - len(r.buf); len(chunk) > room {
			r.buf = append(r.buf, chunk[:room]...)
			text := textLineTooLong
			if r.used > 0 {
				text = textCommandTooLong
			}
			return nil, false, &Error{Text: text, Fatal: true}
		}
		r.buf = append(r.buf, chunk...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && (len(r.buf) > 0 || r.used > 0) {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	r.used += len(r.buf)
	n := len(r.buf) - 1 // drop the LF
	if n == 0 || r.buf[n-1] != '\r' {
		return r.buf[:n], true, nil
	}
	return r.buf[:n-1], false, nil
}

// readLiteral reads the n bytes of a literal into r.lit, whose capacity never
// grows beyond MaxLiteralBytes. The caller has checked n.
func (r *Reader) readLiteral(n int) ([]byte, error) {
	if cap(r.lit) < n {
		r.lit = make([]byte, n, min(max(n, 2*cap(r.lit)), MaxLiteralBytes))
	}
	data := r.lit[:n]
	if _, err := io.ReadFull(r.br, data); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	r.used += n
	return data, nil
}
