package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// relayBufferSize is the copy buffer borrowed from a pool while a chunk is
// in flight. It is never held by an idle session.
const relayBufferSize = 32 << 10

// relayCloseGrace is how long the second direction may keep going after the
// first one ended (a peer's LOGOUT reply still on its way, say). Then both
// sides are closed: a mail session is over when either side ends it.
const relayCloseGrace = 5 * time.Second

// Endpoint is one side of a relay: a connection plus the bytes already read
// from it (held in a bufio.Reader during the pre-auth phase) that must reach
// the other side first.
type Endpoint struct {
	Conn    net.Conn
	Pending []byte
}

// RelayStats counts the bytes moved each way.
type RelayStats struct {
	ClientToBackend int64
	BackendToClient int64
}

// RelayOptions tunes a relay.
type RelayOptions struct {
	// Idle closes the session when neither side sent anything for this
	// long. Zero means no idle timeout.
	Idle time.Duration
	// Buffers lends copy buffers. Nil means a private pool.
	Buffers *BufferPool

	// tap, set by the session registry, counts the bytes live and gates
	// the writes to the client (see relayTap). Nil: neither.
	tap *relayTap
}

// BufferPool lends relay copy buffers; share one across all sessions.
type BufferPool struct{ pool sync.Pool }

// NewBufferPool returns a pool of relayBufferSize buffers.
func NewBufferPool() *BufferPool {
	p := &BufferPool{}
	p.pool.New = func() any {
		b := make([]byte, relayBufferSize)
		return &b
	}
	return p
}

func (p *BufferPool) get() *[]byte  { return p.pool.Get().(*[]byte) }
func (p *BufferPool) put(b *[]byte) { p.pool.Put(b) }

// Relay copies bytes both ways between client and backend until either side
// ends, ctx is cancelled, or neither side sends anything for opts.Idle. It
// closes both connections before returning. It never parses what it moves.
func Relay(ctx context.Context, client, backend Endpoint, opts RelayOptions) (RelayStats, error) {
	idle := opts.Idle
	buffers := opts.Buffers
	if buffers == nil {
		buffers = NewBufferPool()
	}
	r := &relay{client: client.Conn, backend: backend.Conn, buffers: buffers}
	r.touch()
	up, down := &r.upBytes, &r.downBytes
	if opts.tap != nil {
		up, down = &opts.tap.up, &opts.tap.down
	}
	// The backend→client copier writes to toClient: the client, or the
	// registry's gate in front of it.
	toClient := opts.tap.gate(client.Conn)

	var closeOnce sync.Once
	closeBoth := func() {
		closeOnce.Do(func() {
			client.Conn.Close()
			backend.Conn.Close()
		})
	}
	defer closeBoth()

	if idle > 0 {
		stopIdle := r.watchIdle(idle, closeBoth)
		defer stopIdle()
	}
	stopCtx := context.AfterFunc(ctx, closeBoth)
	defer stopCtx()

	type result struct {
		toBackend bool
		err       error
	}
	done := make(chan result, 2)
	go func() {
		err := r.copyHalf(backend.Conn, client, up)
		done <- result{toBackend: true, err: err}
	}()
	go func() {
		err := r.copyHalf(toClient, backend, down)
		done <- result{toBackend: false, err: err}
	}()

	first := <-done
	// Pass the end on: a half-close lets the peer finish its reply.
	if first.toBackend {
		closeWrite(backend.Conn)
	} else {
		closeWrite(toClient)
	}
	grace := time.AfterFunc(relayCloseGrace, closeBoth)
	second := <-done
	grace.Stop()
	closeBoth()

	stats := RelayStats{ClientToBackend: up.Load(), BackendToClient: down.Load()}
	if r.idleExpired.Load() {
		return stats, errRelayIdle
	}
	if err := firstRealError(first.err, second.err); err != nil {
		return stats, err
	}
	return stats, nil
}

// errRelayIdle reports that the session was closed for inactivity.
var errRelayIdle = errors.New("relay: idle timeout")

type relay struct {
	client, backend net.Conn
	buffers         *BufferPool
	upBytes         atomic.Int64
	downBytes       atomic.Int64
	lastActive      atomic.Int64 // unix nanoseconds
	idleExpired     atomic.Bool
}

func (r *relay) touch() { r.lastActive.Store(time.Now().UnixNano()) }

// watchIdle closes the session when nothing moved for idle: one timer per
// session, re-armed for the time that is left, and no goroutine. The stop
// function it returns disarms it for good.
func (r *relay) watchIdle(idle time.Duration, closeBoth func()) (stop func()) {
	var (
		mu      sync.Mutex // orders the callback after AfterFunc's return and before stop
		t       *time.Timer
		stopped bool
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(idle, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		quiet := time.Since(time.Unix(0, r.lastActive.Load()))
		if quiet >= idle {
			r.idleExpired.Store(true)
			closeBoth()
			return
		}
		t.Reset(idle - quiet)
	})
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
	}
}

// copyHalf moves src's pending bytes and then everything src sends to dst.
func (r *relay) copyHalf(dst net.Conn, src Endpoint, counter *atomic.Int64) error {
	if len(src.Pending) > 0 {
		n, err := dst.Write(src.Pending)
		counter.Add(int64(n))
		if err != nil {
			return err
		}
	}
	srcTCP, srcIsTCP := src.Conn.(*net.TCPConn)
	dstTCP, dstIsTCP := dst.(*net.TCPConn)
	if srcIsTCP && dstIsTCP {
		return r.spliceLoop(dstTCP, srcTCP, counter)
	}
	var raw syscall.RawConn
	if srcIsTCP {
		if rc, err := srcTCP.SyscallConn(); err == nil {
			raw = rc
		}
	}
	return r.bufferLoop(dst, src.Conn, raw, counter)
}

// bufferLoop copies with a pooled buffer. When src is a plain socket it
// first waits for readability without any buffer, so an idle session holds
// none; a TLS source reads straight into the pooled buffer.
func (r *relay) bufferLoop(dst, src net.Conn, raw syscall.RawConn, counter *atomic.Int64) error {
	for {
		if raw != nil {
			if err := waitReadable(raw); err != nil {
				return err
			}
		}
		bp := r.buffers.get()
		n, rerr := src.Read(*bp)
		var werr error
		if n > 0 {
			r.touch()
			var wn int
			wn, werr = dst.Write((*bp)[:n])
			counter.Add(int64(wn))
		}
		r.buffers.put(bp)
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

// spliceLoop moves bytes kernel-side between two plain TCP sockets: wait
// until src is readable, ask how much is queued (SIOCINQ), and splice exactly
// that much, so the call never blocks on a half-filled request and the idle
// timer sees every chunk.
func (r *relay) spliceLoop(dst, src *net.TCPConn, counter *atomic.Int64) error {
	raw, err := src.SyscallConn()
	if err != nil {
		return err
	}
	for {
		if err := waitReadable(raw); err != nil {
			return err
		}
		queued, err := queuedBytes(raw)
		if err != nil {
			return err
		}
		if queued == 0 {
			// Readable with nothing queued: end of stream or an error.
			var probe [1]byte
			n, rerr := src.Read(probe[:])
			if n > 0 {
				wn, werr := dst.Write(probe[:n])
				counter.Add(int64(wn))
				if werr != nil {
					return werr
				}
				continue
			}
			if rerr == nil || errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
		r.touch()
		n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: int64(queued)})
		counter.Add(n)
		if err != nil {
			return err
		}
	}
}

// waitReadable blocks until the socket has data or has ended, holding no
// buffer: the readiness callback peeks one byte into a stack array.
func waitReadable(raw syscall.RawConn) error {
	var peek [1]byte
	var sysErr error
	err := raw.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			return false
		}
		sysErr = nil // data, end of stream, or an error the next read reports
		return true
	})
	if err != nil {
		return err
	}
	return sysErr
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

// closeWrite half-closes c where the type allows it (TCP FIN, TLS
// close_notify), so the peer sees the end of this direction.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// firstRealError drops the errors that only say "the other side closed".
func firstRealError(errs ...error) error {
	for _, err := range errs {
		if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, unix.ETIMEDOUT) {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		return err
	}
	return nil
}
