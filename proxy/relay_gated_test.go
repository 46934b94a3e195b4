//go:build linux

package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/loopback"
	"github.com/kanmon-mail/kanmon/proxy/relay"
	"github.com/kanmon-mail/kanmon/proxy/relay/relaytest"
)

// body is a literal's content of n bytes: text lines that look like IMAP
// responses and literal announcements, so that a tracker fed them by
// mistake would lose its way.
func body(n int, seed byte) string {
	var sb strings.Builder
	for i := 0; sb.Len() < n; i++ {
		sb.WriteString("* BYE fake {12}\r\nline ")
		sb.WriteByte('a' + (seed+byte(i))%26)
		sb.WriteString("\r\n")
	}
	return sb.String()[:n]
}

// fetchTranscript is a server's FETCH of message bodies of the given
// sizes, with a line or two between them and the tagged end.
func fetchTranscript(sizes ...int) []string {
	var rs []string
	for i, n := range sizes {
		rs = append(rs, "* "+string(rune('1'+i%9))+" FETCH (UID 9 BODY[] "+fmt.Sprintf("{%d}\r\n%s", n, body(n, byte(i)))+")\r\n")
		if i%2 == 1 {
			rs = append(rs, "* 4 EXISTS\r\n")
		}
	}
	return append(rs, "a5 OK FETCH completed\r\n")
}

// readInto reads c until its end (or 10 s) into a buffer and sends it on
// the returned channel.
func readInto(c net.Conn) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		out <- b
	}()
	return out
}

// trackerClean reports whether the gate's tracker stands between two
// responses.
func (t *relayTap) trackerClean() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bound.Clean()
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A FETCH of large and small bodies through a gated plain-text relay
// arrives byte for byte, however the backend cuts its writes (literals
// ending inside a chunk, with the next response line behind them); the
// large bodies go by splice, the counters are exact, the tracker is clean
// at the end, and the direction parks afterwards with no buffer on loan.
func TestGatedSpliceFetchByteExact(t *testing.T) {
	stream := strings.Join(fetchTranscript(300<<10, 17, 1<<20, 5000, relay.SpliceMin, 200<<10, 0, 64<<10), "")
	for seed := range uint64(4) {
		w, tap := gatedWorld(t)
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, len(stream))
			_ = w.Client.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, _ := io.ReadFull(w.Client, b)
			got <- b[:n]
		}()
		rng := rand.New(rand.NewPCG(seed, 2))
		for i := 0; i < len(stream); {
			// Seed 0: one write; the others: random cuts, some
			// tiny, with pauses, so the relay sees partial queues.
			n := len(stream)
			if seed > 0 {
				n = min(1+rng.IntN(96<<10), len(stream)-i)
				if rng.IntN(4) == 0 {
					n = min(1+rng.IntN(40), len(stream)-i)
				}
			}
			if _, err := io.WriteString(w.Backend, stream[i:i+n]); err != nil {
				t.Fatal(err)
			}
			i += n
			if seed > 0 && rng.IntN(3) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if b := <-got; !bytes.Equal(b, []byte(stream)) {
			t.Fatalf("seed %d: client got %d bytes, want %d; differs", seed, len(b), len(stream))
		}
		if tap.spliced.Load() == 0 {
			t.Errorf("seed %d: no literal byte was spliced", seed)
		}
		if d := tap.bytes.BackendToClient.Load(); d != int64(len(stream)) {
			t.Errorf("seed %d: backend→client counter %d, want %d", seed, d, len(stream))
		}
		if !tap.trackerClean() {
			t.Errorf("seed %d: tracker not clean after whole responses", seed)
		}
		// The gated direction still parks, holding nothing.
		w.Parked(t, 2)
		relaytest.WaitLent(t, w.Pool)
		w.RoundTrip(t, "a6 NOOP\r\n", "a6 OK\r\n")
		w.Parked(t, 2)
		if d := tap.bytes.BackendToClient.Load(); d != int64(len(stream)+len("a6 OK\r\n")) {
			t.Errorf("seed %d: backend→client counter %d after the NOOP", seed, d)
		}
		w.Cancel()
		w.Wait(t)
	}
}

// A revocation while a literal is being spliced writes no BYE: the
// client gets a prefix of the stream and then the end. Both while the
// backend is silent mid-literal, and while a splice is stuck on a client
// that does not read (the revocation's write deadline frees the gate).
func TestGatedSpliceRevocationMidLiteral(t *testing.T) {
	stream := strings.Join(fetchTranscript(8<<20), "")
	for _, mode := range []string{"backend silent", "client not reading"} {
		t.Run(mode, func(t *testing.T) {
			w, tap := gatedWorld(t)
			var got <-chan []byte
			part := stream
			if mode == "backend silent" {
				// Half the body, then nothing.
				part = stream[:len(stream)/2]
				got = readInto(w.Client)
			}
			go func() { _, _ = io.WriteString(w.Backend, part) }()
			waitFor(t, "a splice", func() bool { return tap.spliced.Load() > 0 })
			if mode == "backend silent" {
				waitFor(t, "the half body", func() bool { return tap.bytes.BackendToClient.Load() == int64(len(part)) })
			} else {
				time.Sleep(50 * time.Millisecond) // the socket buffers fill
			}
			start := time.Now()
			if tap.stop([]byte(imapRevokedBye())) {
				t.Error("BYE written inside a literal")
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("stop took %v", took)
			}
			w.Cancel()
			if got == nil {
				got = readInto(w.Client)
			}
			b := <-got
			if !strings.HasPrefix(stream, string(b)) {
				t.Errorf("client got %d bytes that are not a prefix of the stream", len(b))
			}
			if bytes.Contains(b, []byte(imapRevokedBye())) {
				t.Error("client got the BYE")
			}
			if d := tap.bytes.BackendToClient.Load(); d != int64(len(b)) {
				t.Errorf("counter %d, client got %d", d, len(b))
			}
			w.Wait(t)
		})
	}
}

// A revocation between two responses, after spliced literals, writes the
// BYE after the last whole response.
func TestGatedSpliceRevocationBetweenResponses(t *testing.T) {
	stream := strings.Join(fetchTranscript(512<<10, 100<<10), "")
	w, tap := gatedWorld(t)
	go func() { _, _ = io.WriteString(w.Backend, stream) }()
	relaytest.Expect(t, w.Client, stream)
	if tap.spliced.Load() == 0 {
		t.Error("no literal byte was spliced")
	}
	waitFor(t, "the counter", func() bool { return tap.bytes.BackendToClient.Load() == int64(len(stream)) })
	if !tap.stop([]byte(imapRevokedBye())) {
		t.Error("no BYE between two responses")
	}
	w.Cancel()
	if got := relaytest.ReadAll(t, w.Client); got != imapRevokedBye() {
		t.Errorf("client got %q after the stream, want the BYE", got)
	}
	// The counter counts what was relayed; the BYE is the tap's own.
	if d := tap.bytes.BackendToClient.Load(); d != int64(len(stream)) {
		t.Errorf("counter %d, want %d", d, len(stream))
	}
	w.Wait(t)
}

// A stream the tracker lost is never spliced: the bytes still arrive,
// through user space.
func TestGatedSpliceLostStream(t *testing.T) {
	stream := "* 1 FETCH (BODY[] {99999999999999999999}\r\n" + body(256<<10, 3) + ")\r\n"
	w, tap := gatedWorld(t)
	go func() { _, _ = io.WriteString(w.Backend, stream) }()
	relaytest.Expect(t, w.Client, stream)
	if n := tap.spliced.Load(); n != 0 {
		t.Errorf("%d bytes spliced on a lost stream", n)
	}
	if tap.trackerClean() {
		t.Error("a lost stream is clean")
	}
}

// BenchmarkGatedFetch relays a FETCH of 1 MiB bodies through a gated
// plain-text relay (the registry's gate on an IMAP session, client and
// backend on loopback) and reports the share of the bytes spliced, and
// the CPU per MiB of the whole test process: the relay, and the test's
// backend and client, which copy every byte once each.
func BenchmarkGatedFetch(b *testing.B) {
	one := []byte(strings.Join(fetchTranscript(1<<20, 1<<20, 1<<20, 1<<20), ""))
	client, clientEnd := loopback.Pair(b)
	backend, backendEnd := loopback.Pair(b)
	tap := &relayTap{client: clientEnd, backend: backendEnd, gated: true}
	done := make(chan struct{})
	relay.Start(context.Background(), relay.Endpoint{Conn: clientEnd}, relay.Endpoint{Conn: backendEnd}, relay.Options{Gate: tap, Counters: &tap.bytes}, func(relay.Stats, error) { close(done) })
	go func() {
		for {
			if _, err := backend.Write(one); err != nil {
				return
			}
		}
	}()
	b.SetBytes(int64(len(one)))
	buf := make([]byte, 256<<10)
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	for b.Loop() {
		for n := 0; n < len(one); {
			m, err := client.Read(buf[:min(len(buf), len(one)-n)])
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
	b.ReportMetric(float64(tap.spliced.Load())/float64(tap.bytes.BackendToClient.Load()), "spliced/byte")
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/1000/(float64(b.N)*float64(len(one))/(1<<20)), "cpu-ms/MiB")
	client.Close()
	backend.Close()
	<-done
}

// gatedWorld is a relay with the session registry's IMAP gate in front of
// the client, as an IMAP session has.
func gatedWorld(t *testing.T) (*relaytest.World, *relayTap) {
	tap := &relayTap{gated: true}
	w := relaytest.New(t, relaytest.Options{Counters: &tap.bytes, Gate: func(clientEnd, backendEnd net.Conn) relay.Gate {
		tap.client, tap.backend = clientEnd, backendEnd
		return tap
	}})
	return w, tap
}
