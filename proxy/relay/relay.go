// Package relay moves bytes both ways between a client and its backend
// once a login has succeeded. It never parses what it moves; a Gate in
// front of the client may (the session registry's IMAP gate does).
//
// On Linux a relay keeps no goroutine and no buffer for an idle
// direction: after ParkAfter without bytes the direction parks on a
// Poller (one epoll instance per server), and plain TCP sockets are
// spliced kernel-side. Elsewhere each direction copies through a pooled
// buffer, as io.Copy does, and never parks or splices.
//
// It imports no kanmon package.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// BufferSize is the copy buffer borrowed from a pool while a chunk is
// in flight. It is never held by an idle session, so its size costs memory
// only per transfer in progress; 128 KiB moves a large FETCH in a quarter
// of the read and write calls that 32 KiB takes (kanmon's CPU per MiB
// relayed fell by about 30% in cmd/kanmon-bench).
const BufferSize = 128 << 10

// closeGrace is how long the second direction may keep going after the
// first one ended (a peer's LOGOUT reply still on its way, say). Then both
// sides are closed: a mail session is over when either side ends it.
const closeGrace = 5 * time.Second

// DefaultParkAfter is how long a direction of a relay waits for bytes on a
// goroutine of its own before it parks: the goroutine ends and the
// server's Poller watches the socket instead (park_linux.go). Long enough that
// a busy session never parks between two chunks; short, next to the
// minutes an IMAP IDLE lasts.
const DefaultParkAfter = time.Second

// Endpoint is one side of a relay: a connection plus the bytes already read
// from it (held in a bufio.Reader during the pre-auth phase) that must reach
// the other side first.
type Endpoint struct {
	Conn    net.Conn
	Pending []byte
}

// Stats counts the bytes moved each way.
type Stats struct {
	ClientToBackend int64
	BackendToClient int64
}

// Counters count the bytes a relay moves while it runs; read them at any
// time, from any goroutine.
type Counters struct {
	ClientToBackend atomic.Int64
	BackendToClient atomic.Int64
}

// Stats is what c has counted so far.
func (c *Counters) Stats() Stats {
	return Stats{ClientToBackend: c.ClientToBackend.Load(), BackendToClient: c.BackendToClient.Load()}
}

// Options tune a relay. The zero value relays with a private buffer pool,
// no idle timeout, no gate, and never parks.
type Options struct {
	// Idle closes the session when neither side sent anything for this
	// long. Zero means no idle timeout.
	Idle time.Duration
	// Buffers lends copy buffers. Nil means a private pool.
	Buffers *BufferPool
	// Counters count the bytes live. Nil means private counters, read
	// only at the end (Stats).
	Counters *Counters
	// Gate, when set, stands in front of the client for the
	// backend→client direction.
	Gate Gate
	// Poller, when set, lets an idle direction park without a goroutine
	// (Linux only; elsewhere nothing parks).
	Poller *Poller
	// ParkAfter is how long an idle direction keeps its goroutine before
	// it parks. Zero means DefaultParkAfter.
	ParkAfter time.Duration
}

// BufferPool lends relay copy buffers; share one across all sessions.
type BufferPool struct {
	pool sync.Pool
	lent atomic.Int64 // buffers out on loan
}

// NewBufferPool returns a pool of BufferSize buffers.
func NewBufferPool() *BufferPool {
	p := &BufferPool{}
	p.pool.New = func() any {
		b := make([]byte, BufferSize)
		return &b
	}
	return p
}

// Lent is how many buffers are out on loan: in flight in a copy.
func (p *BufferPool) Lent() int64 { return p.lent.Load() }

func (p *BufferPool) get() *[]byte {
	p.lent.Add(1)
	return p.pool.Get().(*[]byte)
}

func (p *BufferPool) put(b *[]byte) {
	p.lent.Add(-1)
	p.pool.Put(b)
}

// Run copies bytes both ways between client and backend until either side
// ends, ctx is cancelled, or neither side sends anything for opts.Idle. It
// closes both connections before returning. The error is nil for an
// orderly end by either side, ErrIdle for the idle timeout, or the first
// I/O error that was not just the other side closing.
func Run(ctx context.Context, client, backend Endpoint, opts Options) (Stats, error) {
	type result struct {
		stats Stats
		err   error
	}
	done := make(chan result, 1)
	Start(ctx, client, backend, opts, func(stats Stats, err error) {
		done <- result{stats, err}
	})
	res := <-done
	return res.stats, res.err
}

// Start is Run without the wait: it starts the relay and returns at
// once; onDone gets Run's results once both connections are closed and
// both directions have ended. A session relays this way, so that no
// goroutine of its own waits for the end.
func Start(ctx context.Context, client, backend Endpoint, opts Options, onDone func(Stats, error)) {
	buffers := opts.Buffers
	if buffers == nil {
		buffers = NewBufferPool()
	}
	r := &relay{
		client:    client.Conn,
		backend:   backend.Conn,
		buffers:   buffers,
		poller:    opts.Poller,
		parkAfter: opts.ParkAfter,
		onDone:    onDone,
	}
	if r.parkAfter <= 0 {
		r.parkAfter = DefaultParkAfter
	}
	r.touch()
	counters := opts.Counters
	if counters == nil {
		counters = &Counters{}
	}
	up, down := &counters.ClientToBackend, &counters.BackendToClient
	// The backend→client copier writes to toClient: the client, or the
	// gate in front of it.
	r.toClient = client.Conn
	if opts.Gate != nil {
		r.toClient = &gatedConn{Conn: client.Conn, gate: opts.Gate}
	}
	r.up.init(r, backend.Conn, client, up, true)
	r.down.init(r, r.toClient, backend, down, false)
	if opts.Idle > 0 {
		r.stopIdle = r.watchIdle(opts.Idle, r.closeBoth)
	}
	r.stopCtx = context.AfterFunc(ctx, r.closeBoth)
	go r.up.run()
	go r.down.run()
}

// ErrIdle reports that the session was closed for inactivity.
var ErrIdle = errors.New("relay: idle timeout")

// relay is one running relay: its two directions and how it ends.
type relay struct {
	client, backend net.Conn
	// toClient is what the backend→client direction writes to: the
	// client, or the registry's gate in front of it.
	toClient net.Conn
	buffers  *BufferPool
	// poller watches the parked directions; nil: a direction never parks.
	poller *Poller
	// parkAfter is how long a direction waits with a goroutine before it
	// parks.
	parkAfter   time.Duration
	up, down    direction
	lastActive  atomic.Int64 // unix nanoseconds
	idleExpired atomic.Bool
	stopIdle    func() // nil without an idle timeout
	stopCtx     func() bool
	onDone      func(Stats, error)
	closeOnce   sync.Once

	mu sync.Mutex // guards what follows and the directions' state
	// closing is set once closeBoth has begun: nothing parks any more.
	closing bool
	// ended counts the directions that have ended, errs their errors in
	// the order they ended.
	ended int
	errs  [2]error
	// grace closes both sides a while after the first direction ended.
	grace *time.Timer
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

// directionEnded records the end of d, one of the relay's two
// directions. The first end is passed on as a half-close and starts the
// grace period; the second one finishes the relay.
func (r *relay) directionEnded(d *direction, err error) {
	r.mu.Lock()
	d.state = dirEnded
	r.errs[r.ended] = err
	r.ended++
	n := r.ended
	r.mu.Unlock()
	if n == 2 {
		r.finish()
		return
	}
	// Pass the end on: a half-close lets the peer finish its reply.
	if d.toBackend {
		closeWrite(r.backend)
	} else {
		closeWrite(r.toClient)
	}
	grace := time.AfterFunc(closeGrace, r.closeBoth)
	r.mu.Lock()
	if r.ended == 1 {
		r.grace, grace = grace, nil
	}
	r.mu.Unlock()
	if grace != nil {
		grace.Stop() // the other direction ended meanwhile
	}
}

// finish closes what is left, disarms the timers and reports the result.
func (r *relay) finish() {
	r.closeBoth()
	if r.stopIdle != nil {
		r.stopIdle()
	}
	r.stopCtx()
	r.mu.Lock()
	grace := r.grace
	errs := r.errs
	r.mu.Unlock()
	if grace != nil {
		grace.Stop()
	}
	stats := Stats{ClientToBackend: r.up.counter.Load(), BackendToClient: r.down.counter.Load()}
	var err error
	switch {
	case r.idleExpired.Load():
		err = ErrIdle
	default:
		err = firstRealError(errs[0], errs[1])
	}
	r.onDone(stats, err)
}

// closeBoth closes both connections, once. A parked direction is taken
// from the poller first (its socket must not be closed while the poller
// may still use its descriptor) and resumed on a goroutine, which then
// meets the closed connection and ends as a running one does.
func (r *relay) closeBoth() {
	r.closeOnce.Do(func() {
		var resume []*direction
		r.mu.Lock()
		r.closing = true
		for _, d := range []*direction{&r.up, &r.down} {
			if d.state == dirParked {
				r.poller.remove(d.parkID)
				d.state = dirRunning
				resume = append(resume, d)
			}
		}
		r.mu.Unlock()
		r.client.Close()
		r.backend.Close()
		for _, d := range resume {
			go d.run()
		}
	})
}

// park hands d's socket to the poller, and reports whether it did: then
// d's goroutine must end, and the poller resumes d when the socket has
// bytes or has ended. Nothing parks once the relay is closing.
func (r *relay) park(d *direction) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing || r.poller == nil {
		return false
	}
	id, err := r.poller.add(d.srcRaw, d)
	if err != nil {
		return false
	}
	d.parkID, d.state = id, dirParked
	return true
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
		if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ETIMEDOUT) {
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
