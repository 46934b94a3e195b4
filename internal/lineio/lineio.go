// Package lineio reads CRLF lines with a bound on their length, and holds
// the line limits of POP3 and SMTP that both sides of kanmon obey: the
// pre-auth fronts, which read what clients send, and the backend logins,
// which read what mail servers answer. Memory is bounded by the limit,
// never by what the peer sends.
package lineio

import (
	"bufio"
	"errors"
	"strings"
)

// Line limits of the protocols, CRLF included.
const (
	// POP3MaxCommandLine is the longest POP3 command line (RFC 2449 §4).
	// An AUTH command with its initial response must fit too (RFC 5034
	// §4).
	POP3MaxCommandLine = 255
	// POP3MaxResponseLine is the longest POP3 response line (RFC 2449 §4).
	POP3MaxResponseLine = 512
	// SMTPMaxCommandLine is the longest SMTP command line (RFC 5321
	// §4.5.3.1.4).
	SMTPMaxCommandLine = 512
	// SMTPMaxReplyLine is the longest SMTP reply line (RFC 5321
	// §4.5.3.1.5).
	SMTPMaxReplyLine = 512
)

// ErrTooLong is a line over the limit. None of the line past the limit
// has been read, so its rest cannot be told from the next line: the
// connection must close.
var ErrTooLong = errors.New("line too long")

// Reader reads bounded lines from a bufio.Reader. Its buffer is reused
// from line to line and never grows past the largest limit asked for.
type Reader struct {
	br   *bufio.Reader
	line []byte
}

// NewReader reads lines from br.
func NewReader(br *bufio.Reader) *Reader { return &Reader{br: br} }

// Buffered is the underlying reader, with whatever it holds past the last
// line read (bytes a client pipelined, a backend's reply to come).
func (r *Reader) Buffered() *bufio.Reader { return r.br }

// ReadLine reads one line of at most limit octets, line end included, and
// returns it without CRLF; a bare LF ends a line too. A longer line is
// ErrTooLong. Other errors are the reader's.
func (r *Reader) ReadLine(limit int) (string, error) {
	r.line = r.line[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.line)+len(chunk) > limit {
			return "", ErrTooLong
		}
		r.line = append(r.line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(string(r.line[:len(r.line)-1]), "\r"), nil
	}
}

// Printable keeps at most n printable ASCII characters of s, dropping
// everything else: what a peer sent, made safe for a log line or to pass
// on as one line.
func Printable(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= n {
			break
		}
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		}
	}
	return b.String()
}
