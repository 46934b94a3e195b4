//go:build unix

package redisstate_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/redisstate"
)

var _ otp.Replay = (*redisstate.TOTPReplay)(nil)

// portalClient connects to the Redis at url as one node does.
func portalClient(t testing.TB, url, name string) *redisstate.Client {
	t.Helper()
	c, err := redisstate.Open(&config.Redis{URL: url, KeyPrefix: "kanmon:", Node: name, OnFailure: config.RedisOnFailureLocal},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The replay guard is one for all nodes: a step is accepted once per
// user (case-folded), an older one never after it; users are apart.
func TestTOTPReplayShared(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	a, b := portalClient(t, r.URL(), "a").TOTPReplay(), portalClient(t, r.URL(), "b").TOTPReplay()
	steps := []struct {
		g    *redisstate.TOTPReplay
		user string
		step int64
		want bool
	}{
		{a, "alice", 100, true},
		{b, "alice", 100, false}, // the same code on the other node
		{a, "alice", 100, false}, // and on the same one
		{b, "ALICE", 100, false}, // case-folded
		{b, "alice", 99, false},  // an older code after a newer one
		{b, "bob", 100, true},    // another user is apart
		{b, "Alice", 101, true},  // the next step
		{a, "alice", 101, false},
	}
	for _, s := range steps {
		got, err := s.g.Claim(s.user, s.step)
		if err != nil || got != s.want {
			t.Errorf("Claim(%q, %d) = %v, %v; want %v", s.user, s.step, got, err, s.want)
		}
	}
	// The last step lives as long as a code of it can verify, no longer.
	ttl, err := r.Client(t).PTTL(context.Background(), "kanmon:{p}:t:alice").Result()
	if err != nil || ttl <= (2*otp.Skew+1)*otp.Period || ttl > (2*otp.Skew+2)*otp.Period {
		t.Errorf("PTTL of the last step: %v, %v", ttl, err)
	}
}

// Nodes racing with one code: exactly one accepts it.
func TestTOTPReplayRace(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	guards := []*redisstate.TOTPReplay{portalClient(t, r.URL(), "a").TOTPReplay(), portalClient(t, r.URL(), "b").TOTPReplay()}
	for step := int64(1000); step < 1010; step++ {
		var accepted atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				ok, err := guards[i%2].Claim("carol", step)
				if err != nil {
					t.Error(err)
				}
				if ok {
					accepted.Add(1)
				}
			})
		}
		wg.Wait()
		if n := accepted.Load(); n != 1 {
			t.Fatalf("step %d accepted %d times", step, n)
		}
	}
}

// Redis down: Claim refuses with an error (fail closed), at once once
// Redis is known down; when Redis is back, codes are accepted again.
func TestTOTPReplayDown(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	c := portalClient(t, r.URL(), "a")
	g := c.TOTPReplay()
	r.Kill()
	for i := range 2 {
		ok, err := g.Claim("alice", 200)
		if ok || err == nil {
			t.Fatalf("claim %d with Redis down: %v, %v", i, ok, err)
		}
	}
	r.Start(t)
	deadline := time.Now().Add(10 * time.Second)
	for !c.Up() {
		if time.Now().After(deadline) {
			t.Fatal("Redis not up again after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ok, err := g.Claim("alice", 200); !ok || err != nil {
		t.Errorf("claim after Redis came back: %v, %v", ok, err)
	}
}

// The session records: Load, Create with its per-user cap, Swap only from
// the record still stored (a deleted one stays deleted), Delete,
// DeleteOthers, and TTLs on the records and the index.
func TestPortalSessions(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	p, q := portalClient(t, r.URL(), "a").PortalSessions(), portalClient(t, r.URL(), "b").PortalSessions()
	rc := r.Client(t)
	id := func(i int) string { return fmt.Sprintf("%064x", i) }
	rec := func(s string) []byte { return []byte("sealed\x00" + s) }

	if b, err := p.Load(ctx, id(0)); b != nil || err != nil {
		t.Fatalf("Load of nothing: %q, %v", b, err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	const perUser = 3
	for i := range perUser + 1 {
		if err := p.Create(ctx, "carol", id(i), rec(fmt.Sprint(i)), time.Minute, perUser); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // distinct expiry times
	}
	if b, _ := q.Load(ctx, id(0)); b != nil {
		t.Error("the soonest expiring record survived the cap")
	}
	for i := 1; i <= perUser; i++ {
		if b, err := q.Load(ctx, id(i)); !bytes.Equal(b, rec(fmt.Sprint(i))) || err != nil {
			t.Errorf("record %d: %q, %v", i, b, err)
		}
	}
	if n := rc.ZCard(ctx, "kanmon:{p}:u:carol").Val(); n != perUser {
		t.Errorf("index holds %d", n)
	}
	if ttl := rc.PTTL(ctx, "kanmon:{p}:s:"+id(1)).Val(); ttl <= 50*time.Second || ttl > time.Minute {
		t.Errorf("record PTTL %v", ttl)
	}

	// Swap: from the stored record only; it sets the new TTL and keeps
	// the index alive at least as long.
	if ok, err := q.Swap(ctx, "carol", id(1), rec("stale"), rec("x"), time.Hour); ok || err != nil {
		t.Errorf("swap from a stale record: %v, %v", ok, err)
	}
	if ok, err := q.Swap(ctx, "carol", id(1), rec("1"), rec("1b"), time.Hour); !ok || err != nil {
		t.Errorf("swap: %v, %v", ok, err)
	}
	if b, _ := p.Load(ctx, id(1)); !bytes.Equal(b, rec("1b")) {
		t.Errorf("after swap: %q", b)
	}
	if ttl := rc.PTTL(ctx, "kanmon:{p}:s:"+id(1)).Val(); ttl <= 59*time.Minute {
		t.Errorf("record PTTL after swap %v", ttl)
	}
	if ttl := rc.PTTL(ctx, "kanmon:{p}:u:carol").Val(); ttl <= 59*time.Minute {
		t.Errorf("index PTTL after swap %v", ttl)
	}
	if err := p.Delete(ctx, id(2)); err != nil {
		t.Fatal(err)
	}
	if ok, err := q.Swap(ctx, "carol", id(2), rec("2"), rec("2b"), time.Minute); ok || err != nil {
		t.Errorf("swap of a deleted record: %v, %v", ok, err)
	}
	if b, _ := p.Load(ctx, id(2)); b != nil {
		t.Error("a swap brought a deleted record back")
	}

	// DeleteOthers counts the records it deleted (not the stale index
	// entry of the deleted one), and leaves other users alone.
	if err := q.Create(ctx, "bob", id(9), rec("bob"), time.Minute, perUser); err != nil {
		t.Fatal(err)
	}
	if n, err := q.DeleteOthers(ctx, "carol", id(3)); n != 1 || err != nil {
		t.Errorf("DeleteOthers: %d, %v", n, err)
	}
	for i, want := range map[int]bool{1: false, 3: true, 9: true} {
		if b, _ := p.Load(ctx, id(i)); (b != nil) != want {
			t.Errorf("record %d: present %v, want %v", i, b != nil, want)
		}
	}

	// Redis down: every method fails.
	r.Kill()
	if err := p.Ping(ctx); err == nil {
		t.Error("Ping with Redis down")
	}
	if _, err := p.Load(ctx, id(3)); err == nil {
		t.Error("Load with Redis down")
	}
	if err := p.Create(ctx, "carol", id(5), rec("5"), time.Minute, perUser); err == nil {
		t.Error("Create with Redis down")
	}
}
