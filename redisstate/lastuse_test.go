package redisstate

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/redistest"
)

// stateClient opens a redisstate Client of the Redis at url, named node.
// The caller closes it (before its goleak check).
func stateClient(t testing.TB, url, node string) *Client {
	t.Helper()
	c, err := Open(&config.Redis{URL: url, KeyPrefix: config.DefaultRedisKeyPrefix, Node: node}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawClient is a plain go-redis client of srv, for looking at the keys.
func rawClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	return redis.NewClient(&redis.Options{Addr: srv.Addr()})
}

// leakOptions are the goleak options of a test that starts here: the
// goroutines running now, and redistest's waiters on the redis-server
// processes it (re)starts, which the test's cleanup kills.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/kanmon-mail/kanmon/internal/redistest.(*Server).launch.func1"),
	}
}

// eventually polls cond every 10 ms for up to 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func use(user, app, ip string, at time.Time) auth.LastUse {
	return auth.LastUse{User: user, App: app, Time: at.UTC().Truncate(time.Millisecond), ClientIP: ip, Protocol: "imap", Client: "Thunderbird 128"}
}

func TestLastUseSharedAcrossNodes(t *testing.T) {
	leaks := leakOptions()
	srv := redistest.Start(t, redistest.Options{})
	ca, cb := stateClient(t, srv.URL(), "a"), stateClient(t, srv.URL(), "b")
	a, b := newLastUse(ca, slog.New(slog.DiscardHandler), 20*time.Millisecond), newLastUse(cb, slog.New(slog.DiscardHandler), 20*time.Millisecond)

	now := time.Now()
	a.Record("id-1", use("alice", "Thunderbird", "192.0.2.1", now))
	eventually(t, "node b to read node a's use", func() bool {
		all, err := b.All()
		return err == nil && all["id-1"] == use("alice", "Thunderbird", "192.0.2.1", now)
	})
	if got, err := b.Get([]string{"id-1", "id-none"}); err != nil || len(got) != 1 || got["id-1"].ClientIP != "192.0.2.1" {
		t.Errorf("Get: %v %v", got, err)
	}

	// A use that waited longer on node b (older) does not overwrite
	// node a's later one; a newer one does.
	b.Record("id-1", use("alice", "Thunderbird", "198.51.100.9", now.Add(-time.Minute)))
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if all, _ := a.All(); all["id-1"].ClientIP != "192.0.2.1" {
		t.Errorf("an older use replaced a newer one: %+v", all["id-1"])
	}
	b.Record("id-1", use("alice", "Thunderbird", "198.51.100.9", now.Add(time.Minute)))
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if all, _ := a.All(); all["id-1"].ClientIP != "198.51.100.9" {
		t.Errorf("a newer use did not replace the older: %+v", all["id-1"])
	}

	// A pending record is part of All before it is written.
	a.Record("id-2", use("bob", "iPhone", "192.0.2.2", now))
	if all, err := a.All(); err != nil || all["id-2"].User != "bob" {
		t.Errorf("All without the pending record: %v %v", all, err)
	}

	// The hash carries a TTL of about LastUseTTL.
	raw := rawClient(t, srv)
	ttl, err := raw.PTTL(context.Background(), "kanmon:{u}:last").Result()
	if err != nil || ttl < LastUseTTL-time.Hour || ttl > LastUseTTL {
		t.Errorf("TTL of the hash: %v %v", ttl, err)
	}
	raw.Close()

	for _, x := range []*LastUse{a, b} {
		if err := x.Close(); err != nil {
			t.Error(err)
		}
	}
	ca.Close()
	cb.Close()
	goleak.VerifyNone(t, leaks...)
}

func TestLastUseRetain(t *testing.T) {
	leaks := leakOptions()
	srv := redistest.Start(t, redistest.Options{})
	c := stateClient(t, srv.URL(), "a")
	l := newLastUse(c, slog.New(slog.DiscardHandler), time.Hour)
	now := time.Now()
	l.Record("kept", use("alice", "Thunderbird", "192.0.2.1", now.Add(-48*time.Hour)))
	l.Record("revoked", use("alice", "Old", "192.0.2.1", now.Add(-2*time.Hour)))
	l.Record("unknown-recent", use("carol", "New", "192.0.2.3", now.Add(-time.Minute)))
	l.Record("kept-but-ancient", use("bob", "Ancient", "192.0.2.2", now.Add(-LastUseTTL-time.Hour)))
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, srv)
	defer raw.Close()
	if err := raw.HSet(context.Background(), "kanmon:{u}:last", "garbage", "not a record").Err(); err != nil {
		t.Fatal(err)
	}
	if all, _ := l.All(); len(all) != 3 {
		t.Errorf("All shows %d records, want 3 (not the ancient one, not the garbage): %v", len(all), all)
	}
	l.Record("pending-revoked", use("alice", "Gone", "192.0.2.1", now))
	if err := l.Retain(map[string]bool{"kept": true, "kept-but-ancient": true}); err != nil {
		t.Fatal(err)
	}
	fields, err := raw.HKeys(context.Background(), "kanmon:{u}:last").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(fields)
	if strings.Join(fields, ",") != "kept,unknown-recent" {
		t.Errorf("after Retain the hash holds %v, want kept and unknown-recent (another node's new passcode)", fields)
	}
	if l.Pending() != 0 {
		t.Errorf("Retain kept the pending record of a revoked passcode")
	}
	if err := l.Close(); err != nil {
		t.Error(err)
	}
	c.Close()
	raw.Close()
	goleak.VerifyNone(t, leaks...)
}

func TestLastUseRedisDown(t *testing.T) {
	leaks := leakOptions()
	srv := redistest.Start(t, redistest.Options{})
	ca, cb := stateClient(t, srv.URL(), "a"), stateClient(t, srv.URL(), "b")
	a := newLastUse(ca, slog.New(slog.DiscardHandler), 20*time.Millisecond)
	b := newLastUse(cb, slog.New(slog.DiscardHandler), time.Hour)
	a.max = 3

	srv.Kill()
	eventually(t, "node a to see Redis down", func() bool { _, _ = a.All(); return !ca.Up() })
	now := time.Now()
	start := time.Now()
	for i, id := range []string{"id-1", "id-2", "id-3", "id-4", "id-5"} {
		a.Record(id, use("alice", "App", "192.0.2.1", now.Add(time.Duration(i)*time.Second)))
	}
	a.Record("id-1", use("alice", "App", "192.0.2.99", now.Add(time.Hour))) // waiting: replaced, not dropped
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Record with Redis down took %v", d)
	}
	if err := a.Flush(); !errors.Is(err, ErrDown) {
		t.Errorf("Flush with Redis down: %v", err)
	}
	if a.Pending() != 3 || a.Dropped() != 2 {
		t.Errorf("pending %d, dropped %d; want 3 and 2", a.Pending(), a.Dropped())
	}
	if _, err := a.All(); err == nil {
		t.Error("All with Redis down should fail")
	}
	if err := a.Retain(map[string]bool{"id-1": true, "id-2": true, "id-3": true}); err == nil {
		t.Error("Retain with Redis down should fail")
	}

	srv.Start(t)
	eventually(t, "node b to read the records written after the outage", func() bool {
		all, err := b.All()
		return err == nil && len(all) == 3 && all["id-1"].ClientIP == "192.0.2.99"
	})
	for _, x := range []*LastUse{a, b} {
		if err := x.Close(); err != nil {
			t.Error(err)
		}
	}
	ca.Close()
	cb.Close()
	goleak.VerifyNone(t, leaks...)
}

func TestLastUseCloseCountsUnwritten(t *testing.T) {
	leaks := leakOptions()
	srv := redistest.Start(t, redistest.Options{})
	c := stateClient(t, srv.URL(), "a")
	l := newLastUse(c, slog.New(slog.DiscardHandler), time.Hour)
	srv.Kill()
	eventually(t, "Redis down", func() bool { _, _ = l.All(); return !c.Up() })
	l.Record("id-1", use("alice", "App", "192.0.2.1", time.Now()))
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "1 record(s) not written") {
		t.Errorf("Close with Redis down: %v", err)
	}
	if l.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", l.Dropped())
	}
	l.Record("id-2", use("alice", "App", "192.0.2.1", time.Now())) // after Close: ignored
	if l.Pending() != 0 {
		t.Error("Record after Close kept a record")
	}
	c.Close()
	goleak.VerifyNone(t, leaks...)
}
