package portal

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestTokenLen(t *testing.T) {
	if got := base64.RawURLEncoding.EncodedLen(idBytes); got != tokenLen {
		t.Fatalf("tokenLen %d, want %d", tokenLen, got)
	}
}

// A full store pushes out its least recently used session, whoever's it
// is: a sign-in is never refused because of other users' sessions.
func TestSessionStoreCap(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := newSessionStore(15*time.Minute, 8*time.Hour, func() time.Time { return now })
	ids := make([]string, 0, maxSessions)
	for i := range maxSessions {
		id, _, err := st.create(fmt.Sprintf("user%d", i/maxSessionsPerUser), false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if st.len() != maxSessions {
		t.Fatalf("%d sessions", st.len())
	}
	now = now.Add(time.Second)
	if _, ok := st.get(ids[0]); !ok { // now the second is the least recently used
		t.Fatal("the first session is gone")
	}
	if _, _, err := st.create("newcomer", false); err != nil {
		t.Fatalf("a full store refused a sign-in: %v", err)
	}
	if st.len() != maxSessions {
		t.Errorf("%d sessions, want %d", st.len(), maxSessions)
	}
	if _, ok := st.get(ids[1]); ok {
		t.Error("the least recently used session survived")
	}
	for _, id := range []string{ids[0], ids[2], ids[maxSessions-1]} {
		if _, ok := st.get(id); !ok {
			t.Error("a more recently used session was pushed out")
		}
	}
	// Once they are idle too long, they go, and the store empties.
	now = now.Add(16 * time.Minute)
	if _, _, err := st.create("late", false); err != nil {
		t.Fatal(err)
	}
	if st.len() != 1 {
		t.Errorf("%d sessions after the sweep, want 1", st.len())
	}
}

// One user holds at most maxSessionsPerUser sessions (whatever the case
// of the name); a new one pushes out that user's least recently used;
// removeOthers ends all of a user's sessions but one, and no one else's.
func TestSessionStorePerUser(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := newSessionStore(15*time.Minute, 8*time.Hour, func() time.Time { return now })
	other, _, _ := st.create("bob", false)
	var ids []string
	for i := range maxSessionsPerUser {
		user := "carol"
		if i%2 == 1 {
			user = "CAROL"
		}
		id, _, err := st.create(user, false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		now = now.Add(time.Second)
	}
	st.get(ids[0])
	if _, _, err := st.create("Carol", true); err != nil {
		t.Fatal(err)
	}
	if st.len() != maxSessionsPerUser+1 {
		t.Errorf("%d sessions, want %d", st.len(), maxSessionsPerUser+1)
	}
	if _, ok := st.get(ids[1]); ok {
		t.Error("carol's least recently used session survived her 11th sign-in")
	}
	if _, ok := st.get(ids[0]); !ok {
		t.Error("carol's recently used session was pushed out")
	}
	if n := st.removeOthers("cArOl", ids[0]); n != maxSessionsPerUser-1 {
		t.Errorf("removeOthers ended %d sessions, want %d", n, maxSessionsPerUser-1)
	}
	if _, ok := st.get(ids[0]); !ok {
		t.Error("removeOthers ended the session it was to keep")
	}
	if _, ok := st.get(other); !ok {
		t.Error("removeOthers ended another user's session")
	}
	if st.len() != 2 {
		t.Errorf("%d sessions, want 2", st.len())
	}
}

// The tarpit count grows per address (an IPv6 client's per /64), is
// forgotten after a quiet spell and at a success, and a full table
// counts newcomers as repeat offenders.
func TestTarpitCounter(t *testing.T) {
	tc := newTarpitCounter()
	now := time.Now()
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for want := 1; want <= 3; want++ {
		if got := tc.fail(a, now); got != want {
			t.Fatalf("failure %d counted as %d", want, got)
		}
	}
	if got := tc.next(a, now); got != 4 {
		t.Errorf("next: %d, want 4", got)
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

	// IPv6: the addresses of one /64 are one client.
	v6 := []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:abcd::9"}
	for i, s := range v6 {
		if got := tc.fail(netip.MustParseAddr(s), now); got != i+1 {
			t.Errorf("%s: counted as %d, want %d", s, got, i+1)
		}
	}
	if got := tc.fail(netip.MustParseAddr("2001:db8:1:3::1"), now); got != 1 {
		t.Errorf("the next /64: %d", got)
	}
	tc.reset(netip.MustParseAddr("2001:db8:1:2::77"))
	if got := tc.fail(netip.MustParseAddr(v6[0]), now); got != 1 {
		t.Errorf("after a success from the same /64: %d", got)
	}
	// An IPv4-mapped address is its IPv4 address.
	if got := tc.fail(netip.MustParseAddr("::ffff:192.0.2.2"), now); got != 2 {
		t.Errorf("IPv4-mapped: %d, want 2", got)
	}

	for i := range maxTarpitEntries {
		tc.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if got := tc.fail(netip.MustParseAddr("198.51.100.1"), now); got < 4 {
		t.Errorf("a newcomer to a full table: %d", got)
	}
}
