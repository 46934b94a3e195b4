//go:build linux

package relay_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/loopback"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/proxy/relay"
	"github.com/kanmon-mail/kanmon/proxy/relay/relaytest"
)

// tlsRelayWorld is a relay whose client side is TLS over loopback TCP
// and whose backend side is plain TCP, with the buffer pool in view.
type tlsRelayWorld struct {
	client  *tls.Conn // the client's end
	backend net.Conn  // the backend's end
	pool    *relay.BufferPool
	done    chan error
}

func startTLSRelay(t *testing.T) *tlsRelayWorld {
	t.Helper()
	cert, err := selfsigned.New("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cp, ce := loopback.Pair(t)
	bp, be := loopback.Pair(t)
	w := &tlsRelayWorld{
		client:  tls.Client(cp, &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1"}),
		backend: bp,
		pool:    relay.NewBufferPool(),
		done:    make(chan error, 1),
	}
	server := tls.Server(ce, &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
	hs := make(chan error, 1)
	go func() { hs <- server.Handshake() }()
	if err := w.client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := relay.Run(context.Background(), relay.Endpoint{Conn: server}, relay.Endpoint{Conn: be}, relay.Options{Idle: time.Minute, Buffers: w.pool})
		w.done <- err
	}()
	t.Cleanup(func() {
		w.client.Close()
		w.backend.Close()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Error("relay did not end")
		}
	})
	return w
}

// An idle session holds no copy buffer in either direction, a TLS client
// included: the relay waits for a TLS record without one.
func TestRelayTLSIdleHoldsNoBuffer(t *testing.T) {
	w := startTLSRelay(t)
	for range 3 {
		if _, err := io.WriteString(w.client, "a NOOP\r\n"); err != nil {
			t.Fatal(err)
		}
		relaytest.Expect(t, w.backend, "a NOOP\r\n")
		if _, err := io.WriteString(w.backend, "a OK\r\n"); err != nil {
			t.Fatal(err)
		}
		relaytest.Expect(t, w.client, "a OK\r\n")
		relaytest.WaitLent(t, w.pool)
	}
}

// Every byte of a TLS record arrives at once, however the records fall:
// one-byte records, several records that reach kanmon in one segment, and
// a record larger than the relay's buffer. None waits for the next.
func TestRelayTLSRecordsArriveWhole(t *testing.T) {
	w := startTLSRelay(t)
	// One-byte records, each on its own.
	for _, b := range []string{"x", "y", "z"} {
		if _, err := io.WriteString(w.client, b); err != nil {
			t.Fatal(err)
		}
		relaytest.Expect(t, w.backend, b)
	}
	// Three records written back to back: they may reach the relay in one
	// read of the socket, and must not wait for more traffic.
	for _, s := range []string{"DONE\r\n", "b NOOP\r\n", "c LOGOUT\r\n"} {
		if _, err := io.WriteString(w.client, s); err != nil {
			t.Fatal(err)
		}
	}
	relaytest.Expect(t, w.backend, "DONE\r\nb NOOP\r\nc LOGOUT\r\n")
	// Larger than a record and than the relay's buffer.
	big := strings.Repeat("0123456789abcdef", (3*relay.BufferSize)/16+7)
	go func() { _, _ = io.WriteString(w.client, big) }()
	relaytest.Expect(t, w.backend, big)
	relaytest.WaitLent(t, w.pool)
	// The client's close_notify ends the client→backend direction: the
	// backend sees the end of the stream.
	if err := w.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = w.backend.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := w.backend.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after close_notify: %d bytes, %v; want EOF", n, err)
	}
}
