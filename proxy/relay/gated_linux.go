package relay

import (
	"errors"
	"io"
	"net"
)

// The gated direction, spliced where the gate does not look.
//
// A gate may have to see every byte of a response line (the session
// registry's IMAP gate finds line ends and the {N} that announces a
// literal) yet only count the N literal bytes that follow. So when both
// the backend and the client are plain TCP sockets, gatedLoop offers the
// queued bytes to the gate's Splice, which moves the literal part
// kernel-side under its own lock, and copies only the rest (response
// lines, short literals) through a pooled buffer and the gate's Write. A
// FETCH of large bodies thus costs no user-space copy for the bodies.

// gatedLineRead caps a user-space read of the gated direction while the
// stream is outside a literal: such a read holds response lines, which
// are short, and whatever follows them. When a large literal follows, the
// cap is what of it still goes through user space before the splice takes
// over (at most 16 KiB of a 1 MiB FETCH body, 1.6%).
const gatedLineRead = 16 << 10

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
// either splice what the gate lets through kernel-side (Gate.Splice) or
// copy up to gatedLineRead of it through the gate g.
// Only queued bytes are ever asked for, so no call blocks on the backend.
func (d *direction) gatedLoop(g *gatedConn, dst, src *net.TCPConn) error {
	for {
		queued, err := d.awaitQueued(src, g)
		if queued == 0 {
			return err
		}
		d.r.touch()
		n, spliced, err := g.gate.Splice(int64(queued), func(max int64) (int64, error) {
			return dst.ReadFrom(&io.LimitedReader{R: src, N: max})
		})
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
