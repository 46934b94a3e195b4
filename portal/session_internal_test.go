package portal

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestTokenLen(t *testing.T) {
	if got := base64.RawURLEncoding.EncodedLen(idBytes); got != tokenLen {
		t.Fatalf("tokenLen %d, want %d", tokenLen, got)
	}
}

// A full store pushes out the least recently used session that has not
// signed in, never a signed-in one; full of signed-in sessions, it
// refuses new ones.
func TestSessionStoreCap(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := newSessionStore(15*time.Minute, 8*time.Hour, func() time.Time { return now })
	first, _, err := st.create("")
	if err != nil {
		t.Fatal(err)
	}
	for range maxSessions - 1 {
		if _, _, err := st.create("alice"); err != nil {
			t.Fatal(err)
		}
	}
	if st.len() != maxSessions {
		t.Fatalf("%d sessions", st.len())
	}
	if _, _, err := st.create("bob"); err != nil {
		t.Fatalf("a full store with one anonymous session: %v", err)
	}
	if _, ok := st.get(first); ok {
		t.Error("the anonymous session survived")
	}
	if _, _, err := st.create(""); !errors.Is(err, errTooManySessions) {
		t.Errorf("a store full of signed-in sessions: %v, want errTooManySessions", err)
	}
	// Once they expire, there is room again.
	now = now.Add(16 * time.Minute)
	if _, _, err := st.create(""); err != nil {
		t.Errorf("after expiry: %v", err)
	}
	if st.len() != 1 {
		t.Errorf("%d sessions after the sweep, want 1", st.len())
	}
}

// The tarpit count grows per address, is forgotten after a quiet spell
// and at a success, and a full table counts newcomers as repeat offenders.
func TestTarpitCounter(t *testing.T) {
	tc := newTarpitCounter()
	now := time.Now()
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for want := 1; want <= 3; want++ {
		if got := tc.fail(a, now); got != want {
			t.Fatalf("failure %d counted as %d", want, got)
		}
	}
	if got := tc.fail(b, now); got != 1 {
		t.Errorf("another address: %d", got)
	}
	if got := tc.fail(a, now.Add(tarpitMemory)); got != 1 {
		t.Errorf("after a quiet spell: %d", got)
	}
	tc.reset(a)
	if got := tc.fail(a, now); got != 1 {
		t.Errorf("after a success: %d", got)
	}
	for i := range maxTarpitEntries {
		tc.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if got := tc.fail(netip.MustParseAddr("198.51.100.1"), now); got < 4 {
		t.Errorf("a newcomer to a full table: %d", got)
	}
}
