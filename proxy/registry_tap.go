package proxy

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A relay tap is the session registry's handle on a running relay: the
// live byte counters, and for IMAP the one gate through which the
// backend→client copier writes to the client.
//
// How a revocation says goodbye without corrupting the stream: the relay
// moves bytes without parsing them, in chunks that need not end where an
// IMAP response ends, and a chunk may end inside a literal (a message
// body). A "* BYE" written at such a point would land inside a response,
// or, inside a literal, become part of the message the client caches. So
// every write to the client goes through the gate, under a mutex, and the
// gate follows the response stream just enough to know whether it is
// between two responses: line ends, and the {N} literals announced at the
// end of a line (imapBoundary). A revocation then:
//
//  1. sets a short write deadline on the client, so a write stuck on a
//     client that does not read cannot hold the gate;
//  2. marks the tap stopping: the copier's next write fails and the
//     relay's half-close of the client is skipped;
//  3. closes the backend, so the revoked credential sends no further
//     command;
//  4. takes the gate, and writes "* BYE" only if the stream stands between
//     two responses; otherwise (a response half sent, a literal
//     unfinished, a stream it cannot follow) it writes nothing, and the
//     client sees the connection close, as after any network failure.
//
// The price: with a gate, the response lines of an IMAP session's
// backend→client direction are copied through user space; where client
// and backend are both plain TCP (webmail on loopback, say), the literal
// bytes between them are still spliced, under the gate (relay_gated.go).
// Over TLS the whole direction goes through user space, as it must. Idle
// sessions hold no buffer either way. After COMPRESS=DEFLATE
// (RFC 4978) the stream is not plain text and the gate cannot follow it;
// such a session may get a BYE its client cannot decode, before the close.
type relayTap struct {
	// up counts client→backend bytes, down backend→client bytes;
	// spliced counts the literal bytes of down that went kernel-side
	// (relay_gated.go).
	up, down, spliced atomic.Int64

	client, backend net.Conn
	// gated is set for IMAP: the client's writes go through the gate,
	// and stop may end the stream with a goodbye line. Unset: no line,
	// and no gate.
	gated bool

	stopping atomic.Bool
	mu       sync.Mutex // the gate: held around every write to the client
	bound    imapBoundary
}

// byeTimeout bounds both a client write that is stuck when a revocation
// comes and the BYE itself, well inside the second a revocation may take.
const byeTimeout = 300 * time.Millisecond

// errRevoked ends the backend→client copier of a revoked session. It wraps
// net.ErrClosed, so the relay does not report it as a failure.
var errRevoked = fmt.Errorf("session revoked: %w", net.ErrClosed)

// gate returns the connection the backend→client copier writes to: the
// client itself, or, when the tap is gated, the gated client.
func (t *relayTap) gate(client net.Conn) net.Conn {
	if t == nil || !t.gated {
		return client
	}
	return &gatedConn{Conn: client, tap: t}
}

// gatedConn is the client connection as the backend→client copier sees
// it. Reads and everything else pass straight through.
type gatedConn struct {
	net.Conn
	tap *relayTap
}

// Write writes p to the client unless the session is being revoked, and
// follows the response stream.
func (g *gatedConn) Write(p []byte) (int, error) {
	t := g.tap
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping.Load() {
		return 0, errRevoked
	}
	n, err := g.Conn.Write(p)
	t.bound.feed(p[:n])
	return n, err
}

// CloseWrite half-closes the client, except during a revocation, which
// still has a line to write.
func (g *gatedConn) CloseWrite() error {
	t := g.tap
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopping.Load() {
		closeWrite(g.Conn)
	}
	return nil
}

// stop ends the relay's traffic for a revocation or a shutdown: no more
// writes to the client, the backend closed, and, on a gated tap, the
// goodbye line bye (with CRLF) written if the client stands between two
// responses. It reports whether the line was written. The caller then
// closes the relay (its context).
func (t *relayTap) stop(bye []byte) bool {
	if t.gated {
		_ = t.client.SetWriteDeadline(time.Now().Add(byeTimeout))
	}
	t.stopping.Store(true)
	if t.backend != nil {
		t.backend.Close()
	}
	if !t.gated {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.bound.clean() {
		return false
	}
	n, err := t.client.Write(bye)
	t.bound.feed(bye[:n])
	return err == nil
}

// maxLiteralDigits bounds the "{N}" a line may end with: more digits than
// any real literal length has.
const maxLiteralDigits = 19

// imapBoundary follows an IMAP server's response stream (RFC 9051 §4.3)
// just enough to tell whether it stands between two responses: it finds
// line ends, and skips the literal a line announces with a final "{N}"
// (or "~{N}", RFC 3516). It copies nothing; a chunk costs one IndexByte
// per line and O(1) per literal. The zero value stands at the start of a
// response, which is where the relay begins, just after the front's
// tagged OK to the login.
type imapBoundary struct {
	// literal is how many literal bytes are still to come.
	literal int64
	// midLine is true while a line has begun and not ended (after a
	// literal, the line it belongs to goes on).
	midLine bool
	// tail holds the end of the line so far, enough to see "{N}\r\n".
	tail    [maxLiteralDigits + 4]byte
	tailLen int
	// lost is set when the stream cannot be followed (a literal length
	// out of range); from then on nothing is clean.
	lost bool
}

// clean reports whether the stream stands between two responses.
func (b *imapBoundary) clean() bool { return !b.lost && !b.midLine && b.literal == 0 }

// feed advances over p, bytes just written to the client.
func (b *imapBoundary) feed(p []byte) {
	for len(p) > 0 && !b.lost {
		if b.literal > 0 {
			n := int64(len(p))
			if n > b.literal {
				n = b.literal
			}
			b.literal -= n
			p = p[n:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			b.keepTail(p)
			b.midLine = true
			return
		}
		b.keepTail(p[:i+1])
		p = p[i+1:]
		n, ok := b.literalAtEnd()
		b.tailLen = 0
		switch {
		case ok && n < 0:
			b.lost = true
		case ok:
			// The literal's bytes follow, then the rest of the line.
			b.literal, b.midLine = n, true
		default:
			b.midLine = false
		}
	}
}

// skip advances over n literal bytes that reached the client without
// being fed (spliced); n is at most the literal bytes still to come.
func (b *imapBoundary) skip(n int64) { b.literal -= n }

// keepTail appends p to the line's tail, keeping only its last bytes.
func (b *imapBoundary) keepTail(p []byte) {
	if len(p) >= len(b.tail) {
		b.tailLen = copy(b.tail[:], p[len(p)-len(b.tail):])
		return
	}
	if over := b.tailLen + len(p) - len(b.tail); over > 0 {
		copy(b.tail[:], b.tail[over:b.tailLen])
		b.tailLen -= over
	}
	b.tailLen += copy(b.tail[b.tailLen:], p)
}

// literalAtEnd reports whether the line in tail ends with a literal
// announcement "{N}" (a "+" after the digits is allowed too) and returns
// N, or -1 when N is out of range.
func (b *imapBoundary) literalAtEnd() (int64, bool) {
	t := b.tail[:b.tailLen]
	t = bytes.TrimSuffix(t, []byte("\n"))
	t = bytes.TrimSuffix(t, []byte("\r"))
	if !bytes.HasSuffix(t, []byte("}")) {
		return 0, false
	}
	t = t[:len(t)-1]
	t = bytes.TrimSuffix(t, []byte("+"))
	open := bytes.LastIndexByte(t, '{')
	if open < 0 {
		if n := len(t); n > 0 && t[n-1] >= '0' && t[n-1] <= '9' && b.tailLen == len(b.tail) {
			return -1, true // digits longer than the tail: cannot tell
		}
		return 0, false
	}
	if open == len(t)-1 {
		return 0, false
	}
	digits := t[open+1:]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return -1, true
	}
	return n, true
}
