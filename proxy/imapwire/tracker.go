package imapwire

import (
	"bytes"
	"strconv"
)

// maxLiteralDigits bounds the "{N}" a line may end with: more digits than
// any real literal length has.
const maxLiteralDigits = 19

// ResponseTracker follows an IMAP server's response stream (RFC 9051 §4.3)
// just enough to tell whether it stands between two responses: it finds
// line ends, and skips the literal a line announces with a final "{N}"
// (or "~{N}", RFC 3516). It copies nothing; a chunk costs one IndexByte
// per line and O(1) per literal. The zero value stands at the start of a
// response, which is where the relay begins, just after the front's
// tagged OK to the login.
type ResponseTracker struct {
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

// Clean reports whether the stream stands between two responses.
func (b *ResponseTracker) Clean() bool { return !b.lost && !b.midLine && b.literal == 0 }

// Feed advances over p, the next bytes of the stream.
func (b *ResponseTracker) Feed(p []byte) {
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

// Skip advances over n literal bytes that went on without being fed (a
// splice); n is at most Literal().
func (b *ResponseTracker) Skip(n int64) { b.literal -= n }

// Literal is how many bytes of the current literal are still to come;
// 0 outside a literal and once the stream is lost.
func (b *ResponseTracker) Literal() int64 {
	if b.lost {
		return 0
	}
	return b.literal
}

// keepTail appends p to the line's tail, keeping only its last bytes.
func (b *ResponseTracker) keepTail(p []byte) {
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
func (b *ResponseTracker) literalAtEnd() (int64, bool) {
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
