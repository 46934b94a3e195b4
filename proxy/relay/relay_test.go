package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/proxy/relay"
)

// ioTimeout bounds every read a test waits on.
const ioTimeout = 5 * time.Second

// relayEnds are the four connections around a relay: each peer plays a
// client or backend, each end is what Relay is given.
type relayEnds struct {
	clientPeer, clientEnd   net.Conn
	backendPeer, backendEnd net.Conn
}

// tcpPair returns two connected loopback TCP connections.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// newRelayEnds builds the connections for kind:
//
//	"tcp"  both sides plain TCP (the splice path)
//	"tls"  the client side TLS over TCP, the backend plain TCP (buffered)
//	"pipe" both sides net.Pipe (buffered, no socket at all)
func newRelayEnds(t *testing.T, kind string) relayEnds {
	t.Helper()
	var e relayEnds
	switch kind {
	case "tcp":
		e.clientPeer, e.clientEnd = tcpPair(t)
		e.backendPeer, e.backendEnd = tcpPair(t)
	case "tls":
		cert, err := selfsigned.New("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cp, ce := tcpPair(t)
		e.clientPeer = tls.Client(cp, &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1"})
		e.clientEnd = tls.Server(ce, &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
		e.backendPeer, e.backendEnd = tcpPair(t)
	case "pipe":
		e.clientPeer, e.clientEnd = net.Pipe()
		e.backendPeer, e.backendEnd = net.Pipe()
		t.Cleanup(func() { e.clientPeer.Close(); e.backendPeer.Close() })
	default:
		t.Fatalf("kind %q", kind)
	}
	return e
}

type relayResult struct {
	stats relay.Stats
	err   error
}

// startRelay runs Relay in the background.
func startRelay(ctx context.Context, client, backend relay.Endpoint, opts relay.Options) <-chan relayResult {
	done := make(chan relayResult, 1)
	go func() {
		stats, err := relay.Run(ctx, client, backend, opts)
		done <- relayResult{stats, err}
	}()
	return done
}

func waitRelay(t *testing.T, done <-chan relayResult, within time.Duration) relayResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(within):
		t.Fatalf("relay still running after %v", within)
	}
	return relayResult{}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(buf)
}

// readEOF reads what is left until the end of the stream.
func readEOF(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read to EOF: %v", err)
	}
	return string(b)
}

func closeWrite(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// Bytes the front had already buffered go out before anything else, in
// both directions, and are counted.
func TestRelayPendingFirst(t *testing.T) {
	for _, kind := range []string{"tcp", "tls"} {
		t.Run(kind, func(t *testing.T) {
			e := newRelayEnds(t, kind)
			done := startRelay(context.Background(),
				relay.Endpoint{Conn: e.clientEnd, Pending: []byte("a2 SELECT INBOX\r\n")},
				relay.Endpoint{Conn: e.backendEnd, Pending: []byte("* 3 EXISTS\r\n")},
				relay.Options{})
			// Sent after the pending bytes were read by the front.
			go func() { _, _ = io.WriteString(e.clientPeer, "a3 NOOP\r\n") }()
			_, _ = io.WriteString(e.backendPeer, "* 4 EXISTS\r\n")

			if got := readN(t, e.backendPeer, 26); got != "a2 SELECT INBOX\r\na3 NOOP\r\n" {
				t.Errorf("backend got %q", got)
			}
			if got := readN(t, e.clientPeer, 24); got != "* 3 EXISTS\r\n* 4 EXISTS\r\n" {
				t.Errorf("client got %q", got)
			}
			e.clientPeer.Close()
			if got := readEOF(t, e.backendPeer); got != "" {
				t.Errorf("backend got %q after the client left", got)
			}
			e.backendPeer.Close()
			r := waitRelay(t, done, 2*time.Second)
			if r.err != nil {
				t.Errorf("relay: %v", r.err)
			}
			if r.stats.ClientToBackend != 26 || r.stats.BackendToClient != 24 {
				t.Errorf("stats %+v, want 26 bytes up and 24 down", r.stats)
			}
		})
	}
}

// When one side ends its direction, the other side sees EOF, may still
// finish its reply, and the relay returns once both are done, well
// before its grace period.
func TestRelayHalfClose(t *testing.T) {
	for _, kind := range []string{"tcp", "tls"} {
		t.Run("client first/"+kind, func(t *testing.T) {
			e := newRelayEnds(t, kind)
			done := startRelay(context.Background(), relay.Endpoint{Conn: e.clientEnd}, relay.Endpoint{Conn: e.backendEnd}, relay.Options{})
			_, _ = io.WriteString(e.clientPeer, "a LOGOUT\r\n")
			closeWrite(t, e.clientPeer)
			if got := readEOF(t, e.backendPeer); got != "a LOGOUT\r\n" {
				t.Fatalf("backend got %q before EOF", got)
			}
			_, _ = io.WriteString(e.backendPeer, "* BYE\r\na OK\r\n")
			e.backendPeer.Close()
			if got := readEOF(t, e.clientPeer); got != "* BYE\r\na OK\r\n" {
				t.Errorf("client got %q", got)
			}
			start := time.Now()
			r := waitRelay(t, done, 2*time.Second)
			if r.err != nil {
				t.Errorf("relay: %v", r.err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("relay returned %v after both sides ended", d)
			}
		})
		t.Run("backend first/"+kind, func(t *testing.T) {
			e := newRelayEnds(t, kind)
			done := startRelay(context.Background(), relay.Endpoint{Conn: e.clientEnd}, relay.Endpoint{Conn: e.backendEnd}, relay.Options{})
			_, _ = io.WriteString(e.backendPeer, "* BYE Server shutting down\r\n")
			e.backendPeer.Close()
			if got := readEOF(t, e.clientPeer); got != "* BYE Server shutting down\r\n" {
				t.Errorf("client got %q", got)
			}
			e.clientPeer.Close()
			waitRelay(t, done, 2*time.Second)
		})
	}
}

// A session where nothing moves is closed after the idle timeout; one
// where something moves is not.
func TestRelayIdleTimeout(t *testing.T) {
	for _, kind := range []string{"tcp", "tls", "pipe"} {
		t.Run(kind, func(t *testing.T) {
			e := newRelayEnds(t, kind)
			start := time.Now()
			done := startRelay(context.Background(), relay.Endpoint{Conn: e.clientEnd}, relay.Endpoint{Conn: e.backendEnd}, relay.Options{Idle: 100 * time.Millisecond})
			r := waitRelay(t, done, 2*time.Second)
			if d := time.Since(start); d < 100*time.Millisecond {
				t.Errorf("closed after %v, before the idle timeout", d)
			}
			if r.err == nil || !strings.Contains(r.err.Error(), "idle") {
				t.Errorf("relay error %v, want the idle timeout", r.err)
			}
			readEOF(t, e.clientPeer)
			readEOF(t, e.backendPeer)
		})
	}
	t.Run("traffic keeps it open", func(t *testing.T) {
		e := newRelayEnds(t, "tcp")
		// Fourteen chunks 50ms apart: 700ms in all, never 500ms quiet
		// (the margin is for a loaded machine).
		done := startRelay(context.Background(), relay.Endpoint{Conn: e.clientEnd}, relay.Endpoint{Conn: e.backendEnd}, relay.Options{Idle: 500 * time.Millisecond})
		for i := range 14 {
			_, _ = io.WriteString(e.clientPeer, "x")
			if got := readN(t, e.backendPeer, 1); got != "x" {
				t.Fatalf("chunk %d: %q", i, got)
			}
			select {
			case r := <-done:
				t.Fatalf("relay ended while busy: %v", r.err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		e.clientPeer.Close()
		e.backendPeer.Close()
		waitRelay(t, done, 2*time.Second)
	})
}

// Cancelling the context closes both sides.
func TestRelayContextCancel(t *testing.T) {
	e := newRelayEnds(t, "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	done := startRelay(ctx, relay.Endpoint{Conn: e.clientEnd}, relay.Endpoint{Conn: e.backendEnd}, relay.Options{})
	cancel()
	waitRelay(t, done, 2*time.Second)
	readEOF(t, e.clientPeer)
	readEOF(t, e.backendPeer)
}

// 8 MB each way, at once, arrive intact and are counted, over the splice
// path and the buffered ones.
func TestRelayLargeTransfer(t *testing.T) {
	const size = 8 << 20
	up, down := make([]byte, size), make([]byte, size)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)
	for _, kind := range []string{"tcp", "tls", "pipe"} {
		t.Run(kind, func(t *testing.T) {
			e := newRelayEnds(t, kind)
			done := startRelay(context.Background(),
				relay.Endpoint{Conn: e.clientEnd, Pending: up[:1000]},
				relay.Endpoint{Conn: e.backendEnd, Pending: down[:1000]},
				relay.Options{Idle: time.Minute})
			errs := make(chan error, 2)
			go func() { _, err := e.clientPeer.Write(up[1000:]); errs <- err }()
			go func() { _, err := e.backendPeer.Write(down[1000:]); errs <- err }()
			gotDown := make(chan [32]byte, 1)
			go func() {
				b := make([]byte, size)
				_ = e.clientPeer.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, _ = io.ReadFull(e.clientPeer, b)
				gotDown <- sha256.Sum256(b)
			}()
			_ = e.backendPeer.SetReadDeadline(time.Now().Add(20 * time.Second))
			b := make([]byte, size)
			if _, err := io.ReadFull(e.backendPeer, b); err != nil {
				t.Fatalf("backend read: %v", err)
			}
			if !bytes.Equal(b, up) {
				t.Error("client→backend bytes differ")
			}
			if <-gotDown != sha256.Sum256(down) {
				t.Error("backend→client bytes differ")
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("peer write: %v", err)
				}
			}
			e.clientPeer.Close()
			e.backendPeer.Close()
			r := waitRelay(t, done, 5*time.Second)
			if r.stats.ClientToBackend != size || r.stats.BackendToClient != size {
				t.Errorf("stats %+v, want %d each way", r.stats, size)
			}
		})
	}
}

// isReset reports a connection reset by the peer.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
