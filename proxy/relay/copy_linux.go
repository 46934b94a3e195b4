package relay

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// platformParks is true where a direction can wait for its socket without
// a buffer, park, and splice: Linux (epoll, SIOCINQ, splice).
const platformParks = true

// fastCopy runs the copy loop that fits d's sockets: a splice between two
// plain TCP sockets (gated or not), or a TLS source read without holding a
// buffer while idle. handled is false when none fits, and the caller
// copies through a buffer.
func (d *direction) fastCopy() (handled bool, err error) {
	if g, dst, src, ok := d.gatedSplice(); ok {
		return true, d.gatedLoop(g, dst, src)
	}
	srcTCP, srcIsTCP := d.src.(*net.TCPConn)
	dstTCP, dstIsTCP := d.dst.(*net.TCPConn)
	if srcIsTCP && dstIsTCP && d.srcRaw != nil {
		return true, d.spliceLoop(dstTCP, srcTCP)
	}
	if srcTLS, ok := d.src.(*tls.Conn); ok {
		return true, d.tlsLoop(srcTLS)
	}
	return false, nil
}

// waitReadable blocks, holding no buffer, until src's socket has data or
// has ended. When d may park it waits for at most the relay's parkAfter,
// and returns errParkable when nothing came.
func (d *direction) waitReadable() error {
	if !d.parking() {
		return waitReadable(d.srcRaw)
	}
	ready, err := peekReadable(d.srcRaw)
	if err != nil || ready {
		return err
	}
	if err := d.srcTCP.SetReadDeadline(time.Now().Add(d.r.parkAfter)); err != nil {
		return err
	}
	err = waitReadable(d.srcRaw)
	if derr := d.srcTCP.SetReadDeadline(time.Time{}); derr != nil && err == nil {
		err = derr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errParkable
	}
	return err
}

// tlsLoop copies from a TLS source. A read from crypto/tls waits inside
// the record layer with the caller's buffer in hand, so a pooled buffer
// passed to it would stay with an idle session for as long as it sleeps.
// Instead the loop waits in a one-byte read, which brings a whole record
// into crypto/tls's own buffer, and only then borrows a pooled buffer for
// the rest of what crypto/tls already holds (drainTLS), which never waits.
//
// Before that read, a direction that may park waits for the socket
// beneath, so that it can park; but only once crypto/tls is known to hold
// no whole record already received (held): a record that waits in
// crypto/tls makes the socket no more readable.
func (d *direction) tlsLoop(src *tls.Conn) error {
	held := true // at the start, the front's reads may have left records
	for {
		var n int
		var rerr error
		if d.parking() {
			if held {
				// What crypto/tls holds, without waiting.
				n, rerr = drainTLS(src, d.one[:], 0)
				held = n > 0
			}
			if n == 0 && rerr == nil {
				if err := d.waitReadable(); err != nil {
					return err
				}
			}
		}
		if n == 0 && rerr == nil {
			n, rerr = src.Read(d.one[:])
		}
		if n == 0 {
			if rerr == nil {
				continue
			}
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
		d.r.touch()
		bp := d.r.buffers.get()
		buf := *bp
		buf[0] = d.one[0]
		n = 1
		if rerr == nil {
			n, rerr = drainTLS(src, buf, n)
		}
		// drainTLS stops at a full buffer, or once crypto/tls has no
		// whole record left.
		held = n == len(buf)
		wn, werr := d.dst.Write(buf[:n])
		d.counter.Add(int64(wn))
		d.r.buffers.put(bp)
		if werr != nil {
			return werr
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}

// aLongTimeAgo is a read deadline that has always passed.
var aLongTimeAgo = time.Unix(1, 0)

// drainTLS reads into buf[n:] what src holds already: the plaintext left
// of the current record and any records already received, up to a full
// buffer. The reads run under an expired read deadline, so they return
// what is buffered but never wait on the socket; crypto/tls keeps a
// record it has partly received, and a timeout does not break the
// connection. It returns the new fill and the first error other than that
// timeout.
func drainTLS(src *tls.Conn, buf []byte, n int) (int, error) {
	if err := src.SetReadDeadline(aLongTimeAgo); err != nil {
		return n, err
	}
	var rerr error
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				rerr = err
			}
			break
		}
	}
	if err := src.SetReadDeadline(time.Time{}); err != nil && rerr == nil {
		rerr = err
	}
	return n, rerr
}

// spliceLoop moves bytes kernel-side between two plain TCP sockets: wait
// until src is readable, ask how much is queued (SIOCINQ), and splice exactly
// that much, so the call never blocks on a half-filled request and the idle
// timer sees every chunk.
func (d *direction) spliceLoop(dst, src *net.TCPConn) error {
	for {
		queued, err := d.awaitQueued(src, dst)
		if queued == 0 {
			return err
		}
		d.r.touch()
		n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: int64(queued)})
		d.counter.Add(n)
		if err != nil {
			return err
		}
	}
}

// awaitQueued waits, holding no buffer, until src (d's source socket) has
// bytes queued, and returns how many. It returns 0 at the end of src,
// with nil for an orderly end or the error to end on; a socket readable
// with nothing queued is probed (probeEnd), and what the probe reads goes
// to dst.
func (d *direction) awaitQueued(src, dst net.Conn) (int, error) {
	for {
		if err := d.waitReadable(); err != nil {
			return 0, err
		}
		queued, err := queuedBytes(d.srcRaw)
		if err != nil {
			return 0, err
		}
		if queued > 0 {
			return queued, nil
		}
		// Readable with nothing queued: end of stream or an error.
		if done, err := d.probeEnd(src, dst); done {
			return 0, err
		}
	}
}

// waitReadable blocks until the socket has data or has ended, holding no
// buffer: the readiness callback peeks one byte into a stack array.
func waitReadable(raw syscall.RawConn) error {
	var peek [1]byte
	err := raw.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// Data, end of stream, or an error the next read reports.
		return err != unix.EAGAIN && err != unix.EINTR
	})
	return err
}

// peekReadable reports, without waiting, whether the socket has data or
// has ended.
func peekReadable(raw syscall.RawConn) (bool, error) {
	var peek [1]byte
	var ready bool
	err := raw.Control(func(fd uintptr) {
		_, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ready = err != unix.EAGAIN && err != unix.EINTR
	})
	return ready, err
}

// queuedBytes reports how many bytes wait in the socket's receive queue.
func queuedBytes(raw syscall.RawConn) (int, error) {
	var n int
	var ioErr error
	err := raw.Control(func(fd uintptr) {
		n, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	if err != nil {
		return 0, err
	}
	return n, ioErr
}
