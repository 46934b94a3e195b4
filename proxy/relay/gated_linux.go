package proxy

import (
	"errors"
	"io"
	"net"
)

// The gated direction, spliced where the gate does not look.
//
// The registry's gate (registry_tap.go) must see every byte of an IMAP
// response line, to find line ends and the {N} that announces a literal,
// but it only counts the N literal bytes that follow. So when both the
// backend and the client are plain TCP sockets, gatedLoop moves the
// literal bytes kernel-side with splice, as spliceLoop does for an ungated
// direction, and copies only the rest (response lines, short literals)
// through a pooled buffer and the gate, which follows it. A FETCH of large
// bodies thus costs no user-space copy for the bodies.
//
// The gate's guarantees hold for a splice as for a write: it runs under
// the gate's mutex and is refused once the tap is stopping, so a
// revocation's BYE never lands inside a literal and nothing reaches the
// client after a revocation began; the tracker learns of every byte
// spliced (imapBoundary.skip) and the counter counts it.

// gatedLineRead caps a user-space read of the gated direction while the
// stream is outside a literal: such a read holds response lines, which
// are short, and whatever follows them. When a large literal follows, the
// cap is what of it still goes through user space before the splice takes
// over (at most 16 KiB of a 1 MiB FETCH body, 1.6%).
const gatedLineRead = 16 << 10

// gatedSpliceMin is the smallest run of literal bytes worth a splice
// (two system calls through a pipe); a shorter one is copied through
// user space with the lines around it.
const gatedSpliceMin = 4 << 10

// gatedSplice returns the sockets a gated direction can splice between:
// d writes to a gate in front of a plain TCP client and reads a plain TCP
// backend whose readiness it can wait for. ok is false otherwise (a TLS
// client, no gate, a source that is no socket).
func (d *direction) gatedSplice() (g *gatedConn, dst, src *net.TCPConn, ok bool) {
	g, ok = d.dst.(*gatedConn)
	if !ok || d.srcRaw == nil {
		return nil, nil, nil, false
	}
	dst, dstOK := g.Conn.(*net.TCPConn)
	src, srcOK := d.src.(*net.TCPConn)
	if !dstOK || !srcOK {
		return nil, nil, nil, false
	}
	return g, dst, src, true
}

// gatedLoop is spliceLoop for a gated direction: wait until src is
// readable (or parkable, as every loop), ask how much is queued, and then
// either splice the part of it that is literal bytes (relayTap.
// spliceLiteral) or copy up to gatedLineRead of it through the gate g.
// Only queued bytes are ever asked for, so no call blocks on the backend.
func (d *direction) gatedLoop(g *gatedConn, dst, src *net.TCPConn) error {
	for {
		queued, err := d.awaitQueued(src, g)
		if queued == 0 {
			return err
		}
		d.r.touch()
		n, spliced, err := g.tap.spliceLiteral(dst, src, int64(queued))
		d.counter.Add(n)
		if err != nil {
			return err
		}
		if spliced {
			continue
		}
		if err := d.copyChunk(g, min(queued, gatedLineRead)); err != nil {
			return err
		}
	}
}

// probeEnd reads one byte from src, whose socket is readable with nothing
// queued, and writes what it gets to dst. It reports done at the end of
// src, with nil for an orderly end, or on an error.
func (d *direction) probeEnd(src, dst net.Conn) (done bool, err error) {
	var probe [1]byte
	n, rerr := src.Read(probe[:])
	if n > 0 {
		wn, werr := dst.Write(probe[:n])
		d.counter.Add(int64(wn))
		return werr != nil, werr
	}
	if rerr == nil || errors.Is(rerr, io.EOF) {
		return true, nil
	}
	return true, rerr
}

// copyChunk reads at most limit bytes from d's source, which has at
// least that many queued, into a pooled buffer and writes them to dst.
func (d *direction) copyChunk(dst net.Conn, limit int) error {
	bp := d.r.buffers.get()
	defer d.r.buffers.put(bp)
	n, rerr := d.src.Read((*bp)[:limit])
	if n > 0 {
		wn, werr := dst.Write((*bp)[:n])
		d.counter.Add(int64(wn))
		if werr != nil {
			return werr
		}
	}
	if errors.Is(rerr, io.EOF) {
		return nil // the next wait finds the end again
	}
	return rerr
}

// spliceLiteral splices literal bytes from src, the backend, to dst, the
// client beneath the gate: while the tracker is inside a literal with at
// least gatedSpliceMin of it among the queued bytes, it moves
// min(literal left, queued) kernel-side, under the gate and only while
// the tap is not stopping, and tells the tracker it skipped them. It
// returns the bytes moved and spliced = true; spliced = false (and no
// error) means the bytes at hand are lines, or too short a literal, for
// the caller to copy through the gate. A stream the tracker lost is never
// spliced.
func (t *relayTap) spliceLiteral(dst, src *net.TCPConn, queued int64) (n int64, spliced bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping.Load() {
		return 0, false, errRevoked
	}
	want := min(t.bound.literal, queued)
	if t.bound.lost || want < gatedSpliceMin {
		return 0, false, nil
	}
	n, err = dst.ReadFrom(&io.LimitedReader{R: src, N: want})
	t.bound.skip(n)
	t.spliced.Add(n)
	return n, true, err
}
