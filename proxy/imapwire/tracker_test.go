package imapwire

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// respLit is an IMAP literal of body, announced with prefix ("", "~") and
// suffix ("", "+").
func respLit(prefix, suffix, body string) string {
	return fmt.Sprintf("%s{%d%s}\r\n%s", prefix, len(body), suffix, body)
}

// boundaryTranscript is a server's side of an IMAP session after login:
// whole responses, some with literals that hold CRLFs and things that
// look like responses, and a literal announced with a non-synchronizing
// "+" and a binary "~".
var boundaryTranscript = []string{
	"* 1 FETCH (BODY[] " + respLit("", "", strings.Repeat("x", 40<<10)) + ")\r\n",
	"* 3 EXISTS\r\n",
	"a2 OK [READ-WRITE] SELECT completed\r\n",
	"* 1 FETCH (UID 7 BODY[] " + respLit("", "", "Subject: hi\r\n\r\n* BYE fake\r\n{5}\r\n") + ")\r\n",
	"* 2 FETCH (BODY[HEADER] " + respLit("", "", "") + " BODY[TEXT] " + respLit("", "+", "ab\r\n") + ")\r\n",
	"* 3 FETCH (BINARY[] " + respLit("~", "", "\x00\x01\n") + ")\r\n",
	"a3 OK FETCH completed\r\n",
	"+ idling\r\n",
	"* 4 EXISTS\r\n",
	"* OK text that ends in braces {x}\r\n",
	"a4 OK done\n", // a bare LF ends a line too
}

// boundaries returns the offsets in the joined transcript at which a
// response ends.
func boundaries(responses []string) map[int]bool {
	ends := map[int]bool{0: true}
	n := 0
	for _, r := range responses {
		n += len(r)
		ends[n] = true
	}
	return ends
}

func TestResponseTrackerByteByByte(t *testing.T) {
	stream := strings.Join(boundaryTranscript, "")
	ends := boundaries(boundaryTranscript)
	var b ResponseTracker
	for i := 0; i <= len(stream); i++ {
		if got := b.Clean(); got != ends[i] {
			t.Fatalf("after %d bytes (%q…): clean = %v, want %v", i, stream[max(0, i-20):i], got, ends[i])
		}
		if i < len(stream) {
			b.Feed([]byte{stream[i]})
		}
	}
}

func TestResponseTrackerRandomChunks(t *testing.T) {
	stream := strings.Join(boundaryTranscript, "")
	ends := boundaries(boundaryTranscript)
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var b ResponseTracker
		for i := 0; i < len(stream); {
			n := min(1+rng.IntN(40), len(stream)-i)
			b.Feed([]byte(stream[i : i+n]))
			i += n
			if got := b.Clean(); got != ends[i] {
				t.Fatalf("seed %d, after %d bytes: clean = %v, want %v", seed, i, got, ends[i])
			}
		}
	}
}

func TestResponseTrackerLost(t *testing.T) {
	for _, line := range []string{
		"* 1 FETCH (BODY[] {99999999999999999999}\r\n", // out of range
		"* 1 FETCH (BODY[] {123456789012345678901234567}\r\n",
	} {
		var b ResponseTracker
		b.Feed([]byte(line))
		b.Feed([]byte(")\r\n* OK\r\n"))
		if b.Clean() {
			t.Errorf("%q: a stream that cannot be followed must never be clean", line)
		}
	}
}

// FuzzResponseTracker: however the stream is cut into writes, the tracker
// ends in the same state.
func FuzzResponseTracker(f *testing.F) {
	f.Add(strings.Join(boundaryTranscript[1:], ""), 7)
	f.Add("* 1 FETCH (BODY[] {3}\r\na\r\n)\r\n", 20)
	f.Fuzz(func(t *testing.T, stream string, cut int) {
		var whole, split ResponseTracker
		whole.Feed([]byte(stream))
		if len(stream) > 0 {
			cut = ((cut % len(stream)) + len(stream)) % len(stream)
		} else {
			cut = 0
		}
		split.Feed([]byte(stream[:cut]))
		split.Feed([]byte(stream[cut:]))
		if whole.Clean() != split.Clean() || whole.literal != split.literal || whole.lost != split.lost {
			t.Fatalf("cut at %d: whole %+v, split %+v", cut, whole, split)
		}
	})
}

// benchChunk is one relayed chunk: the relay's 128 KiB buffer.
const benchChunk = 128 << 10

// BenchmarkResponseTrackerFeed is the gate's cost per relayed chunk of
// FETCH responses with literals.
func BenchmarkResponseTrackerFeed(b *testing.B) {
	var sb strings.Builder
	for sb.Len() < benchChunk {
		sb.WriteString("* 12 FETCH (UID 912 FLAGS (\\Seen) BODY[] " + respLit("", "", strings.Repeat("line of a message body\r\n", 40)) + ")\r\n")
	}
	chunk := []byte(sb.String())[:benchChunk]
	b.SetBytes(int64(len(chunk)))
	var t ResponseTracker
	for b.Loop() {
		t.Feed(chunk)
	}
}
