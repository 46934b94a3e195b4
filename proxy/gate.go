package proxy

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kanmon-mail/kanmon/proxy/imapwire"
	"github.com/kanmon-mail/kanmon/proxy/relay"
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
// end of a line (imapwire.ResponseTracker). A revocation then:
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
// bytes between them are still spliced, under the gate (Splice).
// Over TLS the whole direction goes through user space, as it must. Idle
// sessions hold no buffer either way. After COMPRESS=DEFLATE
// (RFC 4978) the stream is not plain text and the gate cannot follow it;
// such a session may get a BYE its client cannot decode, before the close.
type relayTap struct {
	// bytes counts what the relay moved, live; spliced counts the literal
	// bytes of the backend→client direction that went kernel-side.
	bytes   relay.Counters
	spliced atomic.Int64

	client, backend net.Conn
	// gated is set for IMAP: the client's writes go through the gate,
	// and stop may end the stream with a goodbye line. Unset: no line,
	// and no gate.
	gated bool

	stopping atomic.Bool
	mu       sync.Mutex // the gate: held around every write to the client
	bound    imapwire.ResponseTracker
}

// byeTimeout bounds both a client write that is stuck when a revocation
// comes and the BYE itself, well inside the second a revocation may take.
const byeTimeout = 300 * time.Millisecond

// errRevoked ends the backend→client copier of a revoked session. It wraps
// net.ErrClosed, so the relay does not report it as a failure.
var errRevoked = fmt.Errorf("session revoked: %w", net.ErrClosed)

// Write writes p to the client unless the session is being revoked, and
// follows the response stream (relay.Gate).
func (t *relayTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping.Load() {
		return 0, errRevoked
	}
	n, err := t.client.Write(p)
	t.bound.Feed(p[:n])
	return n, err
}

// CloseWrite half-closes the client, except during a revocation, which
// still has a line to write (relay.Gate).
func (t *relayTap) CloseWrite() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping.Load() {
		return nil
	}
	if cw, ok := t.client.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Splice lets literal bytes go to the client kernel-side (relay.Gate):
// while the tracker is inside a literal with at least relay.SpliceMin of
// it among the queued bytes, move sends min(literal left, queued), under
// the gate and only while the tap is not stopping, and the tracker skips
// them. spliced = false (and no error) means the bytes at hand are lines,
// or too short a literal, for the relay to copy through Write. A stream
// the tracker lost is never spliced.
func (t *relayTap) Splice(queued int64, move func(n int64) (int64, error)) (n int64, spliced bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping.Load() {
		return 0, false, errRevoked
	}
	want := min(t.bound.Literal(), queued)
	if want < relay.SpliceMin {
		return 0, false, nil
	}
	n, err = move(want)
	t.bound.Skip(n)
	t.spliced.Add(n)
	return n, true, err
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
	if !t.bound.Clean() {
		return false
	}
	n, err := t.client.Write(bye)
	t.bound.Feed(bye[:n])
	return err == nil
}
