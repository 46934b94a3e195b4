// Package relaytest runs a relay between loopback connections for tests:
// the relay package's own and those of the session registry's gate.
package relaytest

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

	"github.com/kanmon-mail/kanmon/internal/loopback"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/proxy/relay"
)

// World is a running relay between two loopback connections, with a
// poller of its own and a short ParkAfter.
type World struct {
	// Client and Backend are the peers' ends: write to Client as the
	// mail client would, to Backend as the server would.
	Client, Backend net.Conn
	// ClientEnd and BackendEnd are the relay's ends.
	ClientEnd, BackendEnd net.Conn
	// Poller and Pool are the relay's own.
	Poller *relay.Poller
	Pool   *relay.BufferPool
	// Cancel ends the relay's context.
	Cancel context.CancelFunc
	done   chan Result
}

// Result is how the relay ended.
type Result struct {
	Stats relay.Stats
	Err   error
}

// ParkAfter is how long a World's idle direction waits before it parks:
// short, so tests see parking at once.
const ParkAfter = 20 * time.Millisecond

// Options shape a World.
type Options struct {
	// TLS puts TLS between Client and ClientEnd, as an implicit-TLS
	// listener has.
	TLS bool
	// Gate, when set, builds the Gate on the client writes from the
	// relay's two ends, as the session registry does for IMAP.
	Gate func(clientEnd, backendEnd net.Conn) relay.Gate
	// Counters, when set, count the bytes live.
	Counters *relay.Counters
	// Idle is the relay's idle timeout; zero means none.
	Idle time.Duration
	// BeforeRelay runs on the relay's client end before the relay
	// starts, as the pre-auth front's reads would.
	BeforeRelay func(client, clientEnd net.Conn)
}

// New starts a World; it ends at test cleanup.
func New(t *testing.T, o Options) *World {
	t.Helper()
	w := &World{Poller: &relay.Poller{}, Pool: relay.NewBufferPool(), done: make(chan Result, 1)}
	cp, ce := loopback.Pair(t)
	w.Client, w.ClientEnd = cp, ce
	if o.TLS {
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
		w.Client, w.ClientEnd = tc, ts
	}
	w.Backend, w.BackendEnd = loopback.Pair(t)
	if o.BeforeRelay != nil {
		o.BeforeRelay(w.Client, w.ClientEnd)
	}
	opts := relay.Options{Idle: o.Idle, Buffers: w.Pool, Poller: w.Poller, ParkAfter: ParkAfter, Counters: o.Counters}
	if o.Gate != nil {
		opts.Gate = o.Gate(w.ClientEnd, w.BackendEnd)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.Cancel = cancel
	relay.Start(ctx, relay.Endpoint{Conn: w.ClientEnd}, relay.Endpoint{Conn: w.BackendEnd}, opts, func(s relay.Stats, err error) {
		w.done <- Result{s, err}
	})
	t.Cleanup(func() {
		cancel()
		w.Client.Close()
		w.Backend.Close()
		w.Wait(t)
	})
	return w
}

// Wait waits for the relay's end and returns its result.
func (w *World) Wait(t *testing.T) Result {
	t.Helper()
	select {
	case r := <-w.done:
		w.done <- r // for the cleanup
		w.expectPollerClosed(t)
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end")
	}
	return Result{}
}

// expectPollerClosed checks that nothing is parked any more and that the
// epoll instance is closed.
func (w *World) expectPollerClosed(t *testing.T) {
	t.Helper()
	if n, open := w.Poller.Parked(); n != 0 || open {
		t.Errorf("poller after the relay: %d parked, epoll open %v", n, open)
	}
}

// Parked waits until n directions are parked and no copier goroutine of
// any relay runs.
func (w *World) Parked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := w.Poller.Parked()
		copiers := CopierGoroutines()
		if got == n && copiers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked and %d copier goroutines; want %d and 0", got, copiers, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CopierGoroutines counts the goroutines that run a relay direction.
func CopierGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("relay.(*direction).run("))
}

// RoundTrip sends a command each way and checks both arrive.
func (w *World) RoundTrip(t *testing.T, cmd, reply string) {
	t.Helper()
	if _, err := io.WriteString(w.Client, cmd); err != nil {
		t.Fatal(err)
	}
	Expect(t, w.Backend, cmd)
	if _, err := io.WriteString(w.Backend, reply); err != nil {
		t.Fatal(err)
	}
	Expect(t, w.Client, reply)
}

// Expect reads exactly want from c within a second.
func Expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %q: got %q, %v", want, got, err)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// WaitLent waits until no relay buffer is on loan.
func WaitLent(t *testing.T, p *relay.BufferPool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for p.Lent() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d relay buffers still on loan while the session is idle", p.Lent())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ReadAll reads c to its end, within a few seconds.
func ReadAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading to the end: %v", err)
	}
	return string(b)
}
