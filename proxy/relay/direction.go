package relay

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// dirState is where a direction of a relay stands.
type dirState uint8

const (
	// dirRunning: a goroutine copies, or waits for the source.
	dirRunning dirState = iota
	// dirParked: no goroutine; the poller watches the source.
	dirParked
	// dirEnded: the direction is over.
	dirEnded
)

// errParkable says that a direction's source stayed silent for the
// relay's parkAfter: its goroutine may end and the direction park.
var errParkable = errors.New("relay: source idle, parkable")

// direction is one half of a relay: everything src sends goes to dst.
type direction struct {
	r        *relay
	dst, src net.Conn
	// pending is what the front had already read from src; it goes
	// first, on the direction's first run.
	pending []byte
	counter *atomic.Int64
	// toBackend tells the client→backend direction from the other.
	toBackend bool
	// srcTCP is the socket src reads from (under TLS, the socket beneath
	// it) and srcRaw its descriptor; both nil when src is no TCP socket,
	// and then the direction never parks.
	srcTCP *net.TCPConn
	srcRaw syscall.RawConn
	// one is tlsLoop's one-byte read.
	one [1]byte
	// state and parkID (the poller's id while parked) are guarded by r.mu.
	state  dirState
	parkID uint64
}

// init sets d up to copy src (and its pending bytes) to dst.
func (d *direction) init(r *relay, dst net.Conn, src Endpoint, counter *atomic.Int64, toBackend bool) {
	d.r, d.dst, d.src, d.pending, d.counter, d.toBackend = r, dst, src.Conn, src.Pending, counter, toBackend
	sock := src.Conn
	if tc, ok := sock.(*tls.Conn); ok {
		sock = tc.NetConn()
	}
	if tcp, ok := sock.(*net.TCPConn); ok && platformParks {
		if raw, err := tcp.SyscallConn(); err == nil {
			d.srcTCP, d.srcRaw = tcp, raw
		}
	}
}

// run copies until the direction ends or parks. It runs on a goroutine of
// its own: one the relay starts, or one the poller starts to resume a
// parked direction.
func (d *direction) run() {
	for {
		err := d.copy()
		if errors.Is(err, errParkable) {
			if d.r.park(d) {
				return
			}
			continue
		}
		d.r.directionEnded(d, err)
		return
	}
}

// wake resumes d, parked under id, on a new goroutine. The poller calls it
// once the socket has bytes or has ended; a relay that closed meanwhile
// has resumed d already, and then wake does nothing.
func (d *direction) wake(id uint64) {
	r := d.r
	r.mu.Lock()
	if d.state != dirParked || d.parkID != id {
		r.mu.Unlock()
		return
	}
	d.state = dirRunning
	r.mu.Unlock()
	go d.run()
}

// parking reports whether d may park: the relay has a poller and src is a
// socket.
func (d *direction) parking() bool { return d.r.poller != nil && d.srcRaw != nil }

// copy moves the pending bytes and then everything src sends to dst, until
// src ends (nil), a side fails, or src stays silent long enough to park
// (errParkable). Where the platform allows (Linux), plain sockets are
// spliced kernel-side and TLS sources are read without holding a buffer
// while idle (fastCopy); elsewhere a pooled buffer copies.
func (d *direction) copy() error {
	if len(d.pending) > 0 {
		n, err := d.dst.Write(d.pending)
		d.counter.Add(int64(n))
		if err != nil {
			return err
		}
		d.pending = nil
	}
	if handled, err := d.fastCopy(); handled {
		return err
	}
	return d.bufferLoop()
}

// bufferLoop copies with a pooled buffer. When src is a plain socket it
// first waits for readability without any buffer, so an idle session holds
// none; any other source (not TCP, not TLS) reads straight into the
// pooled buffer.
func (d *direction) bufferLoop() error {
	for {
		if d.srcRaw != nil {
			if err := d.waitReadable(); err != nil {
				return err
			}
		}
		bp := d.r.buffers.get()
		n, rerr := d.src.Read(*bp)
		var werr error
		if n > 0 {
			d.r.touch()
			var wn int
			wn, werr = d.dst.Write((*bp)[:n])
			d.counter.Add(int64(wn))
		}
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
