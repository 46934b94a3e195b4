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
	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// startRedis starts a Redis for one test and checks, when the test ends,
// that the test left no goroutine behind: none beyond those running now and
// redistest's waiters on the redis-server processes. The check runs after
// the cleanups registered later, which close the test's clients and nodes.
func startRedis(t *testing.T) *redistest.Server {
	t.Helper()
	leaks := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/kanmon-mail/kanmon/internal/redistest.(*Server).launch.func1"),
	}
	t.Cleanup(func() { goleak.VerifyNone(t, leaks...) })
	return redistest.Start(t, redistest.Options{})
}

// stateClient opens a redisstate Client of the Redis at url, named node,
// and closes it when the test ends.
func stateClient(t testing.TB, url, node string) *Client {
	t.Helper()
	c, err := Open(&config.Redis{URL: url, KeyPrefix: config.DefaultRedisKeyPrefix, Node: node}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawClient is a plain go-redis client of srv, for looking at the keys,
// closed when the test ends.
func rawClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// lastUseNode opens node's Client of srv and its LastUse, which writes
// what it gathered once every period. The test's end closes the LastUse
// (which must close without an error, unless the test has closed it
// itself), then the Client.
func lastUseNode(t *testing.T, srv *redistest.Server, node string, period time.Duration) (*Client, *LastUse) {
	t.Helper()
	c := stateClient(t, srv.URL(), node)
	l := newLastUse(c, slog.New(slog.DiscardHandler), period)
	t.Cleanup(func() {
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if err := l.Close(); err != nil && !closed {
			t.Errorf("closing node %s's LastUse: %v", node, err)
		}
	})
	return c, l
}

// waitDown waits until c, asked by l, knows that Redis is down.
func waitDown(t testing.TB, c *Client, l *LastUse) {
	t.Helper()
	eventually(t, "node "+c.Node()+" to see Redis down", func() bool { _, _ = l.All(); return !c.Up() })
}

// eventually waits up to 10 s for cond to hold.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, what, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}

func use(user, app, ip string, at time.Time) auth.LastUse {
	return auth.LastUse{User: user, App: app, Time: at.UTC().Truncate(time.Millisecond), ClientIP: ip, Protocol: "imap", Client: "Thunderbird 128"}
}

func TestLastUseSharedAcrossNodes(t *testing.T) {
	srv := startRedis(t)
	_, a := lastUseNode(t, srv, "a", 20*time.Millisecond)
	_, b := lastUseNode(t, srv, "b", 20*time.Millisecond)

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
	ttl, err := rawClient(t, srv).PTTL(context.Background(), "kanmon:{u}:last").Result()
	if err != nil || ttl < LastUseTTL-time.Hour || ttl > LastUseTTL {
		t.Errorf("TTL of the hash: %v %v", ttl, err)
	}
}

func TestLastUseRetain(t *testing.T) {
	srv := startRedis(t)
	_, l := lastUseNode(t, srv, "a", time.Hour)
	now := time.Now()
	l.Record("kept", use("alice", "Thunderbird", "192.0.2.1", now.Add(-48*time.Hour)))
	l.Record("revoked", use("alice", "Old", "192.0.2.1", now.Add(-2*time.Hour)))
	l.Record("unknown-recent", use("carol", "New", "192.0.2.3", now.Add(-time.Minute)))
	l.Record("kept-but-ancient", use("bob", "Ancient", "192.0.2.2", now.Add(-LastUseTTL-time.Hour)))
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, srv)
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
}

func TestLastUseRedisDown(t *testing.T) {
	srv := startRedis(t)
	ca, a := lastUseNode(t, srv, "a", 20*time.Millisecond)
	_, b := lastUseNode(t, srv, "b", time.Hour)
	a.max = 3

	srv.Kill()
	waitDown(t, ca, a)
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
}

func TestLastUseCloseCountsUnwritten(t *testing.T) {
	srv := startRedis(t)
	c, l := lastUseNode(t, srv, "a", time.Hour)
	srv.Kill()
	waitDown(t, c, l)
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
}
