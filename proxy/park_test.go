package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// testParkAfter parks a silent direction almost at once.
const testParkAfter = 20 * time.Millisecond

// parkWorld is a relay with a poller of its own and a short parkAfter:
// client and backend are the peers' ends.
type parkWorld struct {
	client, backend net.Conn
	// clientEnd and backendEnd are the relay's ends.
	clientEnd, backendEnd net.Conn
	poller                *poller
	pool                  *BufferPool
	tap                   *relayTap
	cancel                context.CancelFunc
	done                  chan parkResult
}

type parkResult struct {
	stats RelayStats
	err   error
}

// parkOptions shape a parkWorld.
type parkOptions struct {
	tls   bool
	gated bool // IMAP's registry gate on the client writes
	idle  time.Duration
	// beforeRelay runs on the relay's client end before the relay starts,
	// as the pre-auth front's reads would.
	beforeRelay func(client, clientEnd net.Conn)
}

func newParkWorld(t *testing.T, o parkOptions) *parkWorld {
	t.Helper()
	w := &parkWorld{poller: &poller{}, pool: NewBufferPool(), done: make(chan parkResult, 1)}
	cp, ce := loopbackPair(t)
	w.client, w.clientEnd = cp, ce
	if o.tls {
		cert, err := selfsigned.New("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		// Full-size records from the start, so that one write is one
		// record.
		tc := tls.Client(cp, &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1", DynamicRecordSizingDisabled: true})
		ts := tls.Server(ce, &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
		hs := make(chan error, 1)
		go func() { hs <- ts.Handshake() }()
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-hs; err != nil {
			t.Fatal(err)
		}
		w.client, w.clientEnd = tc, ts
	}
	w.backend, w.backendEnd = loopbackPair(t)
	if o.beforeRelay != nil {
		o.beforeRelay(w.client, w.clientEnd)
	}
	opts := RelayOptions{Idle: o.idle, Buffers: w.pool, poller: w.poller, parkAfter: testParkAfter}
	if o.gated {
		w.tap = &relayTap{client: w.clientEnd, backend: w.backendEnd, gated: true}
		opts.tap = w.tap
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	startRelay(ctx, Endpoint{Conn: w.clientEnd}, Endpoint{Conn: w.backendEnd}, opts, func(s RelayStats, err error) {
		w.done <- parkResult{s, err}
	})
	t.Cleanup(func() {
		cancel()
		w.client.Close()
		w.backend.Close()
		w.wait(t)
	})
	return w
}

// wait waits for the relay's end and returns its result.
func (w *parkWorld) wait(t *testing.T) parkResult {
	t.Helper()
	select {
	case r := <-w.done:
		w.done <- r // for the cleanup
		w.expectPollerClosed(t)
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end")
	}
	return parkResult{}
}

// expectPollerClosed checks that nothing is parked any more and that the
// epoll instance is closed.
func (w *parkWorld) expectPollerClosed(t *testing.T) {
	t.Helper()
	w.poller.mu.Lock()
	defer w.poller.mu.Unlock()
	if len(w.poller.parked) != 0 || w.poller.ep != nil {
		t.Errorf("poller after the relay: %d parked, epoll open %v", len(w.poller.parked), w.poller.ep != nil)
	}
}

// parked waits until n directions are parked and no copier goroutine of
// any relay runs.
func (w *parkWorld) parked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.poller.mu.Lock()
		got := len(w.poller.parked)
		w.poller.mu.Unlock()
		copiers := copierGoroutines()
		if got == n && copiers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked and %d copier goroutines; want %d and 0", got, copiers, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// copierGoroutines counts the goroutines that run a relay direction.
func copierGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("proxy.(*direction).run("))
}

// roundTrip sends a command each way and checks both arrive.
func (w *parkWorld) roundTrip(t *testing.T, cmd, reply string) {
	t.Helper()
	if _, err := io.WriteString(w.client, cmd); err != nil {
		t.Fatal(err)
	}
	expect(t, w.backend, cmd)
	if _, err := io.WriteString(w.backend, reply); err != nil {
		t.Fatal(err)
	}
	expect(t, w.client, reply)
}

// An idle session parks both directions with no goroutine left, wakes on
// bytes from either side, and parks again; its bytes are counted.
func TestParkIdleSessionHoldsNoGoroutine(t *testing.T) {
	for _, kind := range []string{"tcp", "tls", "gated"} {
		t.Run(kind, func(t *testing.T) {
			w := newParkWorld(t, parkOptions{tls: kind == "tls", gated: kind == "gated"})
			w.parked(t, 2)
			for range 3 {
				w.roundTrip(t, "a NOOP\r\n", "a OK\r\n")
				w.parked(t, 2)
				waitLent(t, w.pool)
			}
			// Unsolicited backend data (an IDLE update) wakes the
			// backend→client direction alone.
			if _, err := io.WriteString(w.backend, "* 3 EXISTS\r\n"); err != nil {
				t.Fatal(err)
			}
			expect(t, w.client, "* 3 EXISTS\r\n")
			w.parked(t, 2)
			// The client's end: EOF reaches the backend, whose own end
			// then ends the relay.
			closePeerWrite(t, w.client)
			_ = w.backend.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := w.backend.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("backend after the client's end: %d bytes, %v; want EOF", n, err)
			}
			// The backend's last words, after the client's end, wake
			// the parked backend→client direction.
			w.parked(t, 1)
			if _, err := io.WriteString(w.backend, "* BYE\r\n"); err != nil {
				t.Fatal(err)
			}
			expect(t, w.client, "* BYE\r\n")
			w.backend.Close()
			if got := readAll(t, w.client); got != "" {
				t.Errorf("client got %q after the backend's end", got)
			}
			r := w.wait(t)
			if r.err != nil {
				t.Errorf("relay error %v", r.err)
			}
			if want := int64(3 * len("a NOOP\r\n")); r.stats.ClientToBackend != want {
				t.Errorf("client→backend %d bytes, want %d", r.stats.ClientToBackend, want)
			}
			if want := int64(3*len("a OK\r\n") + len("* 3 EXISTS\r\n") + len("* BYE\r\n")); r.stats.BackendToClient != want {
				t.Errorf("backend→client %d bytes, want %d", r.stats.BackendToClient, want)
			}
		})
	}
}

// closePeerWrite half-closes a test peer (TCP FIN or TLS close_notify).
func closePeerWrite(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// A parked session still ends every way a running one does: the context
// (a revocation, CloseSessions), the idle timeout, and a revocation that
// closes the backend first. The relay ends, nothing stays parked, and the
// poller's epoll instance is closed.
func TestParkedSessionEnds(t *testing.T) {
	t.Run("context", func(t *testing.T) {
		w := newParkWorld(t, parkOptions{})
		w.parked(t, 2)
		w.cancel()
		if r := w.wait(t); r.err != nil {
			t.Errorf("relay error %v", r.err)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		w := newParkWorld(t, parkOptions{tls: true, idle: 300 * time.Millisecond})
		w.parked(t, 2)
		if r := w.wait(t); !errors.Is(r.err, errRelayIdle) {
			t.Errorf("relay error %v, want the idle timeout", r.err)
		}
	})
	t.Run("revocation", func(t *testing.T) {
		w := newParkWorld(t, parkOptions{gated: true})
		w.roundTrip(t, "a NOOP\r\n", "a OK\r\n")
		w.parked(t, 2)
		// What liveSession.end does: the tap closes the backend (its
		// socket leaves the epoll set with it), then the context ends.
		if !w.tap.stop([]byte(imapRevokedBye)) {
			t.Error("no BYE between two responses")
		}
		w.cancel()
		if got := readAll(t, w.client); got != imapRevokedBye {
			t.Errorf("client got %q, want the BYE and the end", got)
		}
		w.wait(t)
	})
	t.Run("peer reset", func(t *testing.T) {
		w := newParkWorld(t, parkOptions{})
		w.parked(t, 2)
		_ = w.backend.(*net.TCPConn).SetLinger(0)
		w.backend.Close()
		// The client sees the end; its own end wakes the other parked
		// direction, well before the grace period is over.
		if got := readAll(t, w.client); got != "" {
			t.Errorf("client got %q", got)
		}
		w.client.Close()
		w.wait(t)
	})
}

// readAll reads c to its end, within a few seconds.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading to the end: %v", err)
	}
	return string(b)
}

// Records crypto/tls already holds never wait for the socket: a TLS side
// does not park with plaintext in hand, neither the rest of a record the
// pre-auth front read only in part nor what is left after a full buffer.
func TestParkTLSNeverParksWithHeldData(t *testing.T) {
	// The client sends a line and more in one record; the front reads
	// only the line, as a bufio.Reader smaller than the record would, so
	// the rest waits in crypto/tls and the socket is not readable.
	const line = "a LOGIN x y\r\n"
	rest := strings.Repeat("r", 9000)
	w := newParkWorld(t, parkOptions{tls: true, beforeRelay: func(client, clientEnd net.Conn) {
		if _, err := io.WriteString(client, line+rest); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(line))
		if _, err := io.ReadFull(clientEnd, got); err != nil || string(got) != line {
			t.Fatalf("front read %q, %v", got, err)
		}
	}})
	expect(t, w.backend, rest)
	w.parked(t, 2)
	// More than the relay's buffer, in records back to back: what is
	// left after a full buffer goes out without waiting for more.
	big := strings.Repeat("0123456789abcdef", (2*relayBufferSize)/16+5)
	go func() { _, _ = io.WriteString(w.client, big) }()
	expect(t, w.backend, big)
	w.parked(t, 2)
	w.roundTrip(t, "b NOOP\r\n", "b OK\r\n")
}

// The poller never touches a socket closed while parked: its entry goes
// with remove, and a closed socket has left the epoll set by itself.
func TestPollerRemoveAfterClose(t *testing.T) {
	p := &poller{}
	a, b := loopbackPair(t)
	raw, err := a.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	woken := make(chan uint64, 1)
	id, err := p.add(raw, wakeFunc(func(id uint64) { woken <- id }))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if !p.remove(id) {
		t.Error("remove: the entry was gone")
	}
	if p.remove(id) {
		t.Error("a second remove found the entry")
	}
	if p.ep != nil {
		t.Error("epoll instance still open with nothing parked")
	}
	// A parked socket that becomes readable wakes its entry once.
	c, d := loopbackPair(t)
	raw, err = c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	id, err = p.add(raw, wakeFunc(func(id uint64) { woken <- id }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-woken:
		if got != id {
			t.Errorf("woken id %d, want %d", got, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no wake for a readable socket")
	}
	if p.remove(id) {
		t.Error("remove found an entry already woken")
	}
	_ = b
}

// wakeFunc is a waker made of a function.
type wakeFunc func(id uint64)

func (f wakeFunc) wake(id uint64) { f(id) }
