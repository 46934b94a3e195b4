//go:build linux

package relay_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/proxy/relay"
	"github.com/kanmon-mail/kanmon/proxy/relay/relaytest"
)

// An idle session parks both directions with no goroutine left, wakes on
// bytes from either side, and parks again; its bytes are counted.
func TestParkIdleSessionHoldsNoGoroutine(t *testing.T) {
	for _, kind := range []string{"tcp", "tls", "gated"} {
		t.Run(kind, func(t *testing.T) {
			w := relaytest.New(t, relaytest.Options{TLS: kind == "tls", Gate: gateIf(kind == "gated", nil)})
			w.Parked(t, 2)
			for range 3 {
				w.RoundTrip(t, "a NOOP\r\n", "a OK\r\n")
				w.Parked(t, 2)
				relaytest.WaitLent(t, w.Pool)
			}
			// Unsolicited backend data (an IDLE update) wakes the
			// backend→client direction alone.
			if _, err := io.WriteString(w.Backend, "* 3 EXISTS\r\n"); err != nil {
				t.Fatal(err)
			}
			relaytest.Expect(t, w.Client, "* 3 EXISTS\r\n")
			w.Parked(t, 2)
			// The client's end: EOF reaches the backend, whose own end
			// then ends the relay.
			closePeerWrite(t, w.Client)
			_ = w.Backend.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := w.Backend.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("backend after the client's end: %d bytes, %v; want EOF", n, err)
			}
			// The backend's last words, after the client's end, wake
			// the parked backend→client direction.
			w.Parked(t, 1)
			if _, err := io.WriteString(w.Backend, "* BYE\r\n"); err != nil {
				t.Fatal(err)
			}
			relaytest.Expect(t, w.Client, "* BYE\r\n")
			w.Backend.Close()
			if got := relaytest.ReadAll(t, w.Client); got != "" {
				t.Errorf("client got %q after the backend's end", got)
			}
			r := w.Wait(t)
			if r.Err != nil {
				t.Errorf("relay error %v", r.Err)
			}
			if want := int64(3 * len("a NOOP\r\n")); r.Stats.ClientToBackend != want {
				t.Errorf("client→backend %d bytes, want %d", r.Stats.ClientToBackend, want)
			}
			if want := int64(3*len("a OK\r\n") + len("* 3 EXISTS\r\n") + len("* BYE\r\n")); r.Stats.BackendToClient != want {
				t.Errorf("backend→client %d bytes, want %d", r.Stats.BackendToClient, want)
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
		w := relaytest.New(t, relaytest.Options{})
		w.Parked(t, 2)
		w.Cancel()
		if r := w.Wait(t); r.Err != nil {
			t.Errorf("relay error %v", r.Err)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		w := relaytest.New(t, relaytest.Options{TLS: true, Idle: 300 * time.Millisecond})
		w.Parked(t, 2)
		if r := w.Wait(t); !errors.Is(r.Err, relay.ErrIdle) {
			t.Errorf("relay error %v, want the idle timeout", r.Err)
		}
	})
	t.Run("revocation", func(t *testing.T) {
		var g *testGate
		w := relaytest.New(t, relaytest.Options{Gate: gateIf(true, &g)})
		w.RoundTrip(t, "a NOOP\r\n", "a OK\r\n")
		w.Parked(t, 2)
		// What liveSession.end does: the tap closes the backend (its
		// socket leaves the epoll set with it), then the context ends.
		if !g.stop([]byte(testBye)) {
			t.Error("no BYE between two responses")
		}
		w.Cancel()
		if got := relaytest.ReadAll(t, w.Client); got != testBye {
			t.Errorf("client got %q, want the BYE and the end", got)
		}
		w.Wait(t)
	})
	t.Run("peer reset", func(t *testing.T) {
		w := relaytest.New(t, relaytest.Options{})
		w.Parked(t, 2)
		_ = w.Backend.(*net.TCPConn).SetLinger(0)
		w.Backend.Close()
		// The client sees the end; its own end wakes the other parked
		// direction, well before the grace period is over.
		if got := relaytest.ReadAll(t, w.Client); got != "" {
			t.Errorf("client got %q", got)
		}
		w.Client.Close()
		w.Wait(t)
	})
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
	w := relaytest.New(t, relaytest.Options{TLS: true, BeforeRelay: func(client, clientEnd net.Conn) {
		if _, err := io.WriteString(client, line+rest); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(line))
		if _, err := io.ReadFull(clientEnd, got); err != nil || string(got) != line {
			t.Fatalf("front read %q, %v", got, err)
		}
	}})
	relaytest.Expect(t, w.Backend, rest)
	w.Parked(t, 2)
	// More than the relay's buffer, in records back to back: what is
	// left after a full buffer goes out without waiting for more.
	big := strings.Repeat("0123456789abcdef", (2*relay.BufferSize)/16+5)
	go func() { _, _ = io.WriteString(w.Client, big) }()
	relaytest.Expect(t, w.Backend, big)
	w.Parked(t, 2)
	w.RoundTrip(t, "b NOOP\r\n", "b OK\r\n")
}

// testBye is the goodbye line a testGate writes when it stops.
const testBye = "* BYE Your credential was revoked. Please sign in again.\r\n"

// testGate is a Gate as the session registry's works, less the IMAP
// grammar: writes pass under a mutex until stop, which closes the backend
// and writes a last line of its own under the same mutex.
type testGate struct {
	client, backend net.Conn
	mu              sync.Mutex
	stopping        bool
}

func (g *testGate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return 0, net.ErrClosed
	}
	return g.client.Write(p)
}

func (g *testGate) CloseWrite() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopping {
		if cw, ok := g.client.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	return nil
}

func (g *testGate) Splice(int64, func(int64) (int64, error)) (int64, bool, error) {
	return 0, false, nil
}

// stop ends the traffic and writes bye, as a revocation does; it reports
// whether bye was written.
func (g *testGate) stop(bye []byte) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopping = true
	g.backend.Close()
	_, err := g.client.Write(bye)
	return err == nil
}

// gateIf is a relaytest.Options.Gate that puts a testGate in front of
// the client when on, and keeps it in *keep when keep is not nil.
func gateIf(on bool, keep **testGate) func(clientEnd, backendEnd net.Conn) relay.Gate {
	if !on {
		return nil
	}
	return func(clientEnd, backendEnd net.Conn) relay.Gate {
		g := &testGate{client: clientEnd, backend: backendEnd}
		if keep != nil {
			*keep = g
		}
		return g
	}
}
