package imapwire

import (
	"bytes"
	"errors"
)

// parser parses one command line by line. A literal announcement always ends
// its line; after the literal's data the parser goes on at the start of the
// next line.
type parser struct {
	r      *Reader
	line   []byte // the current line, without its terminator
	pos    int    // next byte of line to parse
	bareLF bool   // the current line ended with LF alone
	tag    string // the command's tag, once parsed
}

// fail returns the protocol error with the given text for the current line.
// The rest of the line has been read already, so the error is fatal only if
// the line announces a non-synchronizing literal: the client is sending its
// data without waiting for a reply, and that data cannot be told apart from
// the next command.
func (p *parser) fail(text string) *Error {
	return &Error{Tag: p.tag, Text: text, Fatal: bytes.HasSuffix(p.line, []byte("+}"))}
}

// atEnd reports whether the current line is fully parsed.
func (p *parser) atEnd() bool { return p.pos == len(p.line) }

// take consumes and returns the longest run of bytes in class.
func (p *parser) take(class *[256]bool) []byte {
	start := p.pos
	for p.pos < len(p.line) && class[p.line[p.pos]] {
		p.pos++
	}
	return p.line[start:p.pos]
}

// command parses: tag SP name *(SP arg) CRLF (RFC 9051 §9, "command").
func (p *parser) command() (*Command, error) {
	if len(p.line) == 0 {
		return nil, p.fail(textEmptyLine)
	}
	tag := p.take(&tagChars)
	if len(tag) == 0 || (!p.atEnd() && p.line[p.pos] != ' ') {
		return nil, p.fail(textBadTag)
	}
	p.tag = string(tag)
	if p.bareLF {
		return nil, p.fail(textBareLF)
	}
	if p.atEnd() {
		return nil, p.fail(textNoCommand)
	}
	p.pos++ // SP
	name := p.take(&atomChars)
	if len(name) == 0 {
		if p.atEnd() {
			return nil, p.fail(textNoCommand)
		}
		return nil, p.fail(textBadCommand)
	}
	if !p.atEnd() && p.line[p.pos] != ' ' {
		return nil, p.fail(textBadCommand)
	}
	cmd := &Command{Tag: p.tag, Name: commandName(name)}
	for !p.atEnd() {
		p.pos++ // SP
		if len(cmd.Args) == MaxArgs {
			return nil, p.fail(textTooManyArgs)
		}
		arg, err := p.arg(false)
		if err != nil {
			return nil, err
		}
		cmd.Args = append(cmd.Args, arg)
		if !p.atEnd() && p.line[p.pos] != ' ' {
			return nil, p.fail(textSyntax)
		}
	}
	return cmd, nil
}

// arg parses one argument: an atom, NIL, a quoted string, a literal, or
// (unless inList) a parenthesized list.
func (p *parser) arg(inList bool) (Arg, error) {
	if p.atEnd() {
		return Arg{}, p.fail(textSyntax)
	}
	c := p.line[p.pos]
	switch {
	case c == '(':
		if inList {
			return Arg{}, p.fail(textNestedList)
		}
		return p.list()
	case c == '"':
		return p.quoted()
	case c == '{':
		return p.literal()
	case c == '~' && p.pos+1 < len(p.line) && p.line[p.pos+1] == '{':
		// literal8 (RFC 3516, RFC 9051 §4.3) is for APPEND, never pre-auth.
		return Arg{}, p.fail(textLiteral8)
	case astringChars[c]:
		v := p.take(&astringChars)
		if len(v) == 3 && (v[0]|0x20) == 'n' && (v[1]|0x20) == 'i' && (v[2]|0x20) == 'l' {
			return Arg{Kind: Nil, Value: string(v)}, nil
		}
		return Arg{Kind: Atom, Value: string(v)}, nil
	}
	return Arg{}, p.fail(textSyntax)
}

// list parses "(" [arg *(SP arg)] ")" whose members are not lists.
func (p *parser) list() (Arg, error) {
	p.pos++ // "("
	a := Arg{Kind: List}
	if !p.atEnd() && p.line[p.pos] == ')' {
		p.pos++
		return a, nil
	}
	for {
		if len(a.List) == MaxListItems {
			return Arg{}, p.fail(textTooManyItems)
		}
		item, err := p.arg(true)
		if err != nil {
			return Arg{}, err
		}
		a.List = append(a.List, item)
		if p.atEnd() {
			return Arg{}, p.fail(textSyntax)
		}
		switch p.line[p.pos] {
		case ')':
			p.pos++
			return a, nil
		case ' ':
			p.pos++
		default:
			return Arg{}, p.fail(textSyntax)
		}
	}
}

// quoted parses a quoted string. The only escapes are \\ and \"; CR, LF and
// NUL are refused (RFC 9051 §4.3). Bytes of 8 bits are kept as they are:
// IMAP4rev2 allows UTF-8 there, and the backend judges credentials.
func (p *parser) quoted() (Arg, error) {
	line := p.line
	var out []byte
	escaped := false
	seg := p.pos + 1 // start of the unescaped run being scanned
	for i := seg; i < len(line); i++ {
		switch line[i] {
		case '"':
			var v string
			if escaped {
				v = string(append(out, line[seg:i]...))
			} else {
				v = string(line[seg:i])
			}
			p.pos = i + 1
			return Arg{Kind: Quoted, Value: v}, nil
		case '\\':
			if i+1 == len(line) || (line[i+1] != '\\' && line[i+1] != '"') {
				return Arg{}, p.fail(textBadQuoted)
			}
			out = append(out, line[seg:i]...)
			out = append(out, line[i+1])
			escaped = true
			i++
			seg = i + 1
		case 0, '\r', '\n':
			return Arg{}, p.fail(textBadQuoted)
		}
	}
	return Arg{}, p.fail(textBadQuoted) // unterminated
}

// literal parses "{" number ["+"] "}" CRLF and the literal's data (RFC 9051
// §4.3, RFC 7888). The size is checked before the continuation request is
// sent and before anything is allocated or read, then the parser moves on to
// the line that follows the data.
func (p *parser) literal() (Arg, error) {
	spec := p.line[p.pos+1:]
	if len(spec) == 0 || spec[len(spec)-1] != '}' {
		return Arg{}, p.fail(textSyntax) // "{" must start the line's last token
	}
	spec = spec[:len(spec)-1]
	sync := true
	if len(spec) > 0 && spec[len(spec)-1] == '+' {
		sync = false
		spec = spec[:len(spec)-1]
	}
	// number = 1*DIGIT, a 32-bit value (RFC 9051 §9): ten digits at most,
	// which cannot overflow a uint64.
	if len(spec) == 0 || len(spec) > 10 {
		return Arg{}, p.fail(textBadLiteralSize)
	}
	var n uint64
	for _, c := range spec {
		if c < '0' || c > '9' {
			return Arg{}, p.fail(textBadLiteralSize)
		}
		n = n*10 + uint64(c-'0')
	}
	if n > MaxLiteralBytes {
		return Arg{}, p.fail(textLiteralTooBig)
	}
	if int(n)+len("\r\n") > MaxLineBytes-p.r.used {
		return Arg{}, p.fail(textCommandTooLong)
	}
	if sync && p.r.cont != nil {
		if err := p.r.cont(); err != nil {
			return Arg{}, err
		}
	}
	data, err := p.r.readLiteral(int(n))
	if err != nil {
		return Arg{}, err
	}
	// literal = "{" number "}" CRLF *CHAR8, and CHAR8 excludes NUL. The
	// data has been read, but not the rest of the command: fatal.
	if bytes.IndexByte(data, 0) >= 0 {
		return Arg{}, &Error{Tag: p.tag, Text: textLiteralNUL, Fatal: true}
	}
	v := string(data)
	line, bareLF, err := p.r.readLine()
	if err != nil {
		var perr *Error
		if errors.As(err, &perr) {
			perr.Tag = p.tag
		}
		return Arg{}, err
	}
	p.line, p.pos, p.bareLF = line, 0, bareLF
	if bareLF {
		return Arg{}, p.fail(textBareLF)
	}
	return Arg{Kind: Literal, Value: v}, nil
}

// commandName returns name upper-cased, without allocating for the commands
// a client may send before authentication.
func commandName(name []byte) string {
	var up [16]byte
	if len(name) <= len(up) {
		for i, c := range name {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			up[i] = c
		}
		switch s := up[:len(name)]; string(s) {
		case "CAPABILITY":
			return "CAPABILITY"
		case "NOOP":
			return "NOOP"
		case "LOGOUT":
			return "LOGOUT"
		case "ID":
			return "ID"
		case "STARTTLS":
			return "STARTTLS"
		case "LOGIN":
			return "LOGIN"
		case "AUTHENTICATE":
			return "AUTHENTICATE"
		default:
			return string(s)
		}
	}
	return string(bytes.ToUpper(name))
}

// leadingTag returns the tag b starts with, followed by SP, or "".
func leadingTag(b []byte) string {
	n := 0
	for n < len(b) && tagChars[b[n]] {
		n++
	}
	if n == 0 || n == len(b) || b[n] != ' ' {
		return ""
	}
	return string(b[:n])
}

// Character classes of RFC 9051 §9. CHAR is 7-bit; CTL and SP are never
// part of an atom.
var (
	// ATOM-CHAR: any CHAR except atom-specials
	// ("(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]").
	atomChars = charClass(`(){%*"\]`)
	// ASTRING-CHAR: ATOM-CHAR or resp-specials ("]").
	astringChars = charClass(`(){%*"\`)
	// tag: any ASTRING-CHAR except "+".
	tagChars = charClass(`(){%*"\+`)
)

// charClass returns the printable ASCII bytes (0x21-0x7e) not in except.
func charClass(except string) [256]bool {
	var class [256]bool
	for c := 0x21; c < 0x7f; c++ {
		class[c] = true
	}
	for i := 0; i < len(except); i++ {
		class[except[i]] = false
	}
	return class
}
