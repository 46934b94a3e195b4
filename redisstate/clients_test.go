package redisstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
)

const (
	refused  = auth.ClientRefused
	password = auth.ClientPassword
)

// clientsNode opens node's Client of srv and its Clients, which writes
// what it gathered once every period and logs to log (nil: nowhere). The
// test's end closes the Clients (which must close without an error,
// unless the test has closed it itself), then the Client.
func clientsNode(t *testing.T, srv *redistest.Server, node string, period time.Duration, log *slog.Logger) (*Client, *Clients) {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := stateClient(t, srv.URL(), node)
	s := newClients(c, log, period)
	t.Cleanup(func() {
		s.mu.RLock()
		closed := s.closed
		s.mu.RUnlock()
		if err := s.Close(); err != nil && !closed {
			t.Errorf("closing node %s's Clients: %v", node, err)
		}
	})
	return c, s
}

// waitClientsDown waits until c, asked by s, knows that Redis is down.
func waitClientsDown(t testing.TB, c *Client, s *Clients) {
	t.Helper()
	eventually(t, "node "+c.Node()+" to see Redis down", func() bool { _, _ = s.Clients(refused, "x"); return !c.Up() })
}

// pc is a sighting at at (to the millisecond, as Redis keeps it).
func pc(protocol, name, version, ip string, at time.Time) auth.PasswordClient {
	return auth.PasswordClient{Protocol: protocol, Name: name, Version: version, IP: ip, Last: at.Truncate(time.Millisecond)}
}

// describeClients lists the rows in order, one "protocol/name/version/ip
// xCOUNT first..last" each (times in Unix ms), for comparisons.
func describeClients(list []auth.PasswordClient) string {
	var b strings.Builder
	for _, c := range list {
		fmt.Fprintf(&b, "%s/%s/%s/%s x%d %d..%d; ", c.Protocol, c.Name, c.Version, c.IP, c.Count, c.First.UnixMilli(), c.Last.UnixMilli())
	}
	return b.String()
}

// stored reads a record straight from Redis.
func stored(t testing.TB, raw *redis.Client, key string) []auth.PasswordClient {
	t.Helper()
	v, err := raw.Get(context.Background(), key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return decodeClients(v)
}

// recordKey and indexKey are the keys of the layout documented on Clients.
func recordKey(kind auth.ClientKind, user string) string {
	return "kanmon:{c}:" + kind.String() + ":" + auth.ClientUserKey(user)
}

func indexKey(kind auth.ClientKind) string { return "kanmon:{c}:index:" + kind.String() }

// clientOp is one step of TestClientsChanges.
type clientOp struct {
	forget bool
	kind   auth.ClientKind // of a sighting
	c      auth.PasswordClient
}

// The rules of auth.ClientPending.Apply hold whether an account's changes
// reach Redis in one batch (merged by the buffer) or one by one (merged by
// the script).
func TestClientsChanges(t *testing.T) {
	srv := startRedis(t)
	_, s := clientsNode(t, srv, "a", time.Hour, nil)
	raw := rawClient(t, srv)
	now := time.Now().Truncate(time.Millisecond)
	t0, t1, t2 := now.Add(-3*time.Hour), now.Add(-2*time.Hour), now.Add(-time.Hour)
	const ip1, ip2, ip9 = "192.0.2.1", "192.0.2.2", "192.0.2.9"
	tb := func(v, ip string, at time.Time) auth.PasswordClient { return pc("imap", "Thunderbird", v, ip, at) }
	pop := func(ip string, at time.Time) auth.PasswordClient { return pc("pop3", "", "", ip, at) }
	seen := func(c auth.PasswordClient) clientOp { return clientOp{kind: refused, c: c} }
	forget := func(c auth.PasswordClient) clientOp { return clientOp{forget: true, c: c} }
	row := func(c auth.PasswordClient, count int64, first time.Time) string {
		c.Count, c.First = count, first
		return describeClients([]auth.PasswordClient{c})
	}
	cases := []struct {
		name string
		kind auth.ClientKind // of the record checked
		ops  []clientOp
		want string
	}{
		{"one client three times is one row", refused,
			[]clientOp{seen(tb("115", ip1, t0)), seen(tb("115", ip1, t1)), seen(tb("128", ip1, t2))},
			row(tb("128", ip1, t2), 3, t0)},
		{"an older sighting keeps the newest version", refused,
			[]clientOp{seen(tb("128", ip1, t2)), seen(tb("115", ip1, t0))},
			row(tb("128", ip1, t2), 2, t0)},
		{"most recent first", refused,
			[]clientOp{seen(pop(ip1, t0)), seen(tb("1", ip1, t2)), seen(pop(ip2, t1))},
			row(tb("1", ip1, t2), 1, t2) + row(pop(ip2, t1), 1, t1) + row(pop(ip1, t0), 1, t0)},
		{"forget by name matches any address", refused,
			[]clientOp{seen(tb("1", ip1, t0)), seen(tb("1", ip2, t1)), seen(pop(ip1, t1)), forget(tb("", ip9, t2))},
			row(pop(ip1, t1), 1, t1)},
		{"forget without a name matches the address", refused,
			[]clientOp{seen(pop(ip1, t0)), seen(pop(ip2, t1)), seen(tb("1", ip1, t1)), forget(pop(ip1, t2))},
			row(pop(ip2, t1), 1, t1) + row(tb("1", ip1, t1), 1, t1)}, // a tie keeps the order of arrival
		{"forget matches the protocol", refused,
			[]clientOp{seen(tb("1", ip1, t0)), forget(pc("submission", "Thunderbird", "", ip1, t1))},
			row(tb("1", ip1, t0), 1, t0)},
		{"seen again after a forget", refused,
			[]clientOp{seen(tb("1", ip1, t0)), seen(tb("1", ip1, t0)), forget(tb("", ip1, t1)), seen(tb("2", ip2, t2))},
			row(tb("2", ip2, t2), 1, t2)},
		{"forgetting every row deletes the record", refused,
			[]clientOp{seen(tb("1", ip1, t0)), forget(tb("", ip2, t1))},
			""},
		{"forget leaves the password record", password,
			[]clientOp{{kind: password, c: tb("1", ip1, t0)}, forget(tb("", ip1, t1))},
			row(tb("1", ip1, t0), 1, t0)},
	}
	for _, mode := range []string{"one batch", "a batch per change"} {
		for i, tc := range cases {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				user := fmt.Sprintf("user%d-%d", i, len(mode))
				for _, op := range tc.ops {
					if op.forget {
						s.Forget(user, op.c)
					} else {
						s.Seen(op.kind, user, op.c)
					}
					if mode == "a batch per change" {
						if err := s.Flush(); err != nil {
							t.Fatal(err)
						}
					}
				}
				got, err := s.Clients(tc.kind, user)
				if err != nil || describeClients(got) != tc.want {
					t.Errorf("before the flush: %s %v\nwant %s", describeClients(got), err, tc.want)
				}
				if err := s.Flush(); err != nil {
					t.Fatal(err)
				}
				if s.buf.Len() != 0 {
					t.Fatalf("%d accounts still wait after a flush", s.buf.Len())
				}
				if got := describeClients(stored(t, raw, recordKey(tc.kind, user))); got != tc.want {
					t.Errorf("stored: %s\nwant   %s", got, tc.want)
				}
				got, err = s.Clients(tc.kind, user)
				if err != nil || describeClients(got) != tc.want {
					t.Errorf("after the flush: %s %v\nwant %s", describeClients(got), err, tc.want)
				}
				score, err := raw.ZScore(context.Background(), indexKey(tc.kind), user).Result()
				switch {
				case tc.want == "" && !errors.Is(err, redis.Nil):
					t.Errorf("an empty record is indexed: %v %v", score, err)
				case tc.want != "" && (err != nil || int64(score) != got[0].Last.UnixMilli()):
					t.Errorf("index score %v %v, want the newest last seen %d", score, err, got[0].Last.UnixMilli())
				}
				if n := raw.Exists(context.Background(), recordKey(tc.kind, user)).Val(); (n == 1) != (tc.want != "") {
					t.Errorf("the key exists %d time(s) with the record %q", n, tc.want)
				}
			})
		}
	}
}

// Two nodes adding sightings of one client to one account add up.
func TestClientsTwoNodes(t *testing.T) {
	srv := startRedis(t)
	_, a := clientsNode(t, srv, "a", time.Hour, nil)
	_, b := clientsNode(t, srv, "b", 20*time.Millisecond, nil)
	now := time.Now()
	for i := range 2 {
		a.Seen(refused, "alice", pc("imap", "Thunderbird", "115", "192.0.2.1", now.Add(time.Duration(i-10)*time.Minute)))
	}
	for i := range 3 {
		b.Seen(refused, "Alice", pc("imap", "Thunderbird", "128", "192.0.2.1", now.Add(time.Duration(i)*time.Minute)))
	}
	// Node a sees its own pending sightings over node b's written ones.
	raw := rawClient(t, srv)
	eventually(t, "node b's sightings to be written", func() bool {
		list := stored(t, raw, recordKey(refused, "alice"))
		return len(list) == 1 && list[0].Count == 3
	})
	want := describeClients([]auth.PasswordClient{{Protocol: "imap", Name: "Thunderbird", Version: "128", IP: "192.0.2.1",
		Count: 5, First: now.Add(-10 * time.Minute).Truncate(time.Millisecond), Last: now.Add(2 * time.Minute).Truncate(time.Millisecond)}})
	if got, err := a.Clients(refused, "ALICE"); err != nil || describeClients(got) != want {
		t.Errorf("node a before its flush: %s %v\nwant %s", describeClients(got), err, want)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Clients{a, b} {
		if got, err := n.Clients(refused, "alice"); err != nil || describeClients(got) != want {
			t.Errorf("%s: %s %v\nwant %s", n.c.Node(), describeClients(got), err, want)
		}
	}
}

// A storm of made-up clients never grows the record beyond
// MaxClientsPerAccount rows, and evicts them before an app that keeps
// knocking.
func TestClientsStorm(t *testing.T) {
	srv := startRedis(t)
	_, s := clientsNode(t, srv, "a", time.Hour, nil)
	raw := rawClient(t, srv)
	for _, tc := range []struct {
		name       string
		flushEvery int // sightings of the storm between flushes; 0: one flush
	}{{"one batch", 0}, {"many batches", 37}} {
		t.Run(tc.name, func(t *testing.T) {
			user := "storm-" + strings.ReplaceAll(tc.name, " ", "-")
			now := time.Now()
			app := pc("imap", "Outlook", "16", "198.51.100.7", now.Add(-time.Hour))
			for range 50 {
				s.Seen(refused, user, app)
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			for i := range 1000 {
				s.Seen(refused, user, pc("imap", fmt.Sprintf("fake-%d", i), "", fmt.Sprintf("10.0.%d.%d", i/256, i%256), now.Add(time.Duration(i)*time.Millisecond)))
				if tc.flushEvery > 0 && i%tc.flushEvery == 0 {
					if err := s.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			v, err := raw.Get(context.Background(), recordKey(refused, user)).Result()
			if err != nil {
				t.Fatal(err)
			}
			var rows []json.RawMessage
			if err := json.Unmarshal([]byte(v), &rows); err != nil || len(rows) != auth.MaxClientsPerAccount {
				t.Fatalf("stored %d rows (%v), want %d", len(rows), err, auth.MaxClientsPerAccount)
			}
			list, err := s.Clients(refused, user)
			if err != nil || len(list) != auth.MaxClientsPerAccount {
				t.Fatalf("Clients: %d rows, %v", len(list), err)
			}
			i := slices.IndexFunc(list, func(c auth.PasswordClient) bool { return c.Name == "Outlook" })
			if i < 0 || list[i].Count != 50 {
				t.Errorf("the app that came 50 times is gone: %s", describeClients(list))
			}
			if list[0].Name != "fake-999" {
				t.Errorf("the newest made-up client is not first: %s", describeClients(list))
			}
		})
	}
}

// A row last seen more than ClientRetention ago is dropped, the key lives
// until its newest row expires, and an index entry older than
// ClientRetention is pruned.
func TestClientsRetention(t *testing.T) {
	srv := startRedis(t)
	_, s := clientsNode(t, srv, "a", time.Hour, nil)
	raw := rawClient(t, srv)
	ctx := context.Background()
	now := time.Now()
	ms := func(d time.Duration) int64 { return now.Add(-d).UnixMilli() }
	old := ms(auth.ClientRetention + time.Hour)
	value := fmt.Sprintf(`[{"protocol":"imap","name":"Recent","ip":"192.0.2.1","first":%d,"last":%d,"count":2},`+
		`{"protocol":"imap","name":"Ancient","ip":"192.0.2.2","first":%d,"last":%d,"count":99}]`,
		ms(20*24*time.Hour), ms(10*24*time.Hour), old, old)
	if err := raw.Set(ctx, recordKey(refused, "alice"), value, 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The ancient row is hidden before any write ...
	list, err := s.Clients(refused, "alice")
	if err != nil || len(list) != 1 || list[0].Name != "Recent" {
		t.Errorf("Clients: %s %v", describeClients(list), err)
	}
	// ... and dropped by the next write, which does not refresh the
	// remaining row: the key lives until it is ClientRetention old.
	s.Forget("alice", pc("imap", "Nothing", "", "192.0.2.3", now))
	if err := raw.ZAdd(ctx, indexKey(refused), redis.Z{Score: float64(old), Member: "ghost"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, raw, recordKey(refused, "alice")); len(got) != 1 || got[0].Name != "Recent" || got[0].Count != 2 {
		t.Errorf("stored: %s", describeClients(got))
	}
	ttl := raw.PTTL(ctx, recordKey(refused, "alice")).Val()
	if want := auth.ClientRetention - 10*24*time.Hour; ttl > want || ttl < want-time.Minute {
		t.Errorf("PTTL %v, want about %v", ttl, want)
	}
	if err := raw.ZScore(ctx, indexKey(refused), "ghost").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("an index entry older than the retention stays: %v", err)
	}
	if ttl := raw.PTTL(ctx, indexKey(refused)).Val(); ttl <= 0 || ttl > auth.ClientRetention {
		t.Errorf("PTTL of the index: %v", ttl)
	}

	// A record of ancient rows only is deleted at its next write.
	if err := raw.Set(ctx, recordKey(refused, "bob"), fmt.Sprintf(`[{"protocol":"pop3","ip":"192.0.2.2","first":%d,"last":%d,"count":1}]`, old, old), 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Forget("bob", pc("imap", "Nothing", "", "192.0.2.3", now))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := raw.Exists(ctx, recordKey(refused, "bob")).Val(); n != 0 {
		t.Error("a record of expired rows stays")
	}
}

// Accounts returns the accounts with a client seen since the given time,
// the changes not written yet included.
func TestClientsAccounts(t *testing.T) {
	srv := startRedis(t)
	_, a := clientsNode(t, srv, "a", time.Hour, nil)
	_, b := clientsNode(t, srv, "b", time.Hour, nil)
	raw := rawClient(t, srv)
	ctx := context.Background()
	now := time.Now()
	tb := func(ip string, ago time.Duration) auth.PasswordClient {
		return pc("imap", "Thunderbird", "", ip, now.Add(-ago))
	}
	a.Seen(refused, "Alice", tb("192.0.2.1", time.Hour))
	a.Seen(refused, "bob", tb("192.0.2.2", 10*24*time.Hour))
	a.Seen(password, "dave", tb("192.0.2.4", time.Hour))
	a.Seen(refused, "erin", tb("192.0.2.5", time.Hour))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	a.Seen(refused, "carol", tb("192.0.2.3", 5*time.Minute)) // waits
	a.Forget("erin", tb("192.0.2.9", 0))                     // waits: erin has no row left
	a.Seen(refused, "bob", pc("pop3", "", "", "192.0.2.2", now.Add(-15*24*time.Hour)))
	// An index entry whose record expired, and one that is garbage.
	if err := raw.ZAdd(ctx, indexKey(refused), redis.Z{Score: float64(now.Add(-time.Hour).UnixMilli()), Member: "frank"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.ZAdd(ctx, indexKey(refused), redis.Z{Score: float64(now.Add(-time.Hour).UnixMilli()), Member: "gina"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Set(ctx, recordKey(refused, "gina"), "]]not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	users := func(n *Clients, kind auth.ClientKind, since time.Duration) string {
		t.Helper()
		m, err := n.Accounts(kind, now.Add(-since))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(slices.Sorted(maps.Keys(m)), ",")
	}
	for _, tc := range []struct {
		node  *Clients
		kind  auth.ClientKind
		since time.Duration
		want  string
	}{
		{a, refused, 2 * 24 * time.Hour, "alice,carol"},
		{a, refused, 20 * 24 * time.Hour, "alice,bob,carol"},
		{a, refused, 5 * time.Minute, "carol"},
		{a, password, 2 * 24 * time.Hour, "dave"},
		{b, refused, 20 * 24 * time.Hour, "alice,bob,erin"}, // b waits for a's flush
	} {
		if got := users(tc.node, tc.kind, tc.since); got != tc.want {
			t.Errorf("node %s: Accounts(%s, %v ago) = %s, want %s", tc.node.c.Node(), tc.kind, tc.since, got, tc.want)
		}
	}
	m, err := a.Accounts(refused, now.Add(-20*24*time.Hour))
	if err != nil || len(m["bob"]) != 2 || m["bob"][0].Protocol != "imap" || len(m["alice"]) != 1 {
		t.Errorf("the records: %v %v", m, err)
	}

	// After a flush, node b sees what node a did, and the index has lost
	// erin's entry.
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := users(b, refused, 20*24*time.Hour); got != "alice,bob,carol" {
		t.Errorf("node b after node a's flush: %s", got)
	}
	if err := raw.ZScore(ctx, indexKey(refused), "erin").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("erin's index entry stays: %v", err)
	}
}

// A user name is a key's last part and is never matched against a pattern:
// colons, glob characters, braces, the name of a kind or of the index are
// all just names.
func TestClientsOddUserNames(t *testing.T) {
	srv := startRedis(t)
	_, a := clientsNode(t, srv, "a", time.Hour, nil)
	_, b := clientsNode(t, srv, "b", time.Hour, nil)
	raw := rawClient(t, srv)
	ctx := context.Background()
	now := time.Now()
	names := []struct {
		user  string
		count int64 // sightings of its account after the loop
	}{
		{"a:b*{x}", 2}, {"A:B*{X}", 2}, {"a:b", 1}, {"a", 1}, {"*", 1}, {"[a-z]?", 1},
		{"index", 1}, {"refused", 1}, {"password:index", 1}, {"{c}", 1}, {"}{", 1},
		{"x y\\z", 1}, {"ユーザー", 1}, {"user@example.com", 1},
	}
	want := map[string]bool{}
	for _, n := range names {
		a.Seen(refused, n.user, pc("imap", "Thunderbird", "", "192.0.2.1", now))
		want[auth.ClientUserKey(n.user)] = true
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		list, err := b.Clients(refused, n.user)
		if err != nil || len(list) != 1 || list[0].Count != n.count {
			t.Errorf("%q: %s %v", n.user, describeClients(list), err)
		}
		if typ := raw.Type(ctx, recordKey(refused, n.user)).Val(); typ != "string" {
			t.Errorf("%q: the record %s is a %q", n.user, recordKey(refused, n.user), typ)
		}
	}
	if typ := raw.Type(ctx, indexKey(refused)).Val(); typ != "zset" {
		t.Errorf("the index is a %q", typ)
	}
	m, err := b.Accounts(refused, now.Add(-time.Hour))
	got := map[string]bool{}
	for u := range m {
		got[u] = true
	}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("Accounts: %v %v, want %v", got, err, want)
	}
	// Only the accounts' keys and the index exist: no name made another.
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil || len(keys) != len(want)+1 {
		t.Errorf("%d keys for %d accounts: %q %v", len(keys), len(want), keys, err)
	}
}

// While Redis is down, Seen and Forget only buffer, Flush and the reads
// fail with ErrDown, one warning is logged per outage, and the changes
// land when Redis is back.
func TestClientsRedisDown(t *testing.T) {
	srv := startRedis(t)
	var logs syncbuf.Buffer
	ca, a := clientsNode(t, srv, "a", 20*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	_, b := clientsNode(t, srv, "b", time.Hour, nil)
	now := time.Now()
	app := pc("imap", "Thunderbird", "128", "192.0.2.1", now.Add(-time.Hour))
	a.Seen(refused, "alice", app)
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	// The first command of the outage already says ErrDown.
	if _, err := a.Clients(refused, "alice"); !errors.Is(err, ErrDown) {
		t.Errorf("Clients at the start of the outage: %v", err)
	}
	waitClientsDown(t, ca, a)
	start := time.Now()
	for i := range 100 {
		a.Seen(refused, "alice", pc("imap", fmt.Sprintf("app-%d", i), "", "192.0.2.2", now.Add(time.Duration(i)*time.Millisecond)))
	}
	a.Seen(refused, "alice", app)
	a.Forget("alice", pc("imap", "app-99", "", "192.0.2.3", now))
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Seen and Forget with Redis down took %v", d)
	}
	if err := a.Flush(); !errors.Is(err, ErrDown) {
		t.Errorf("Flush with Redis down: %v", err)
	}
	if _, err := a.Clients(refused, "alice"); !errors.Is(err, ErrDown) {
		t.Errorf("Clients with Redis down: %v", err)
	}
	if _, err := a.Accounts(refused, now.Add(-time.Hour)); !errors.Is(err, ErrDown) {
		t.Errorf("Accounts with Redis down: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // ten flushes of the writer
	warnings := func() int { return strings.Count(logs.String(), "level=WARN") }
	if n := warnings(); n != 1 {
		t.Errorf("%d warnings during one outage, want 1:\n%s", n, logs.String())
	}

	// Redis comes back empty (it keeps nothing on disk): the writer
	// writes what waited, the Forget after the sightings included.
	srv.Start(t)
	eventually(t, "node b to read what node a kept through the outage", func() bool {
		list, err := b.Clients(refused, "alice")
		has := func(name string) bool {
			return slices.ContainsFunc(list, func(c auth.PasswordClient) bool { return c.Name == name })
		}
		return err == nil && has("app-98") && !has("app-99")
	})
	if a.Dropped() != 0 {
		t.Errorf("dropped %d", a.Dropped())
	}

	// A second outage warns again.
	srv.Kill()
	waitClientsDown(t, ca, a)
	a.Seen(refused, "alice", app)
	eventually(t, "the second warning", func() bool { return warnings() == 2 })
	srv.Start(t)
	eventually(t, "the writer to catch up", func() bool { return a.buf.Len() == 0 })
}

// Close reports the changes it could not write, and Seen after Close is
// ignored.
func TestClientsCloseCountsUnwritten(t *testing.T) {
	srv := startRedis(t)
	c, s := clientsNode(t, srv, "a", time.Hour, nil)
	srv.Kill()
	waitClientsDown(t, c, s)
	s.Seen(refused, "alice", pc("imap", "Thunderbird", "", "192.0.2.1", time.Now()))
	s.Seen(password, "alice", pc("imap", "Thunderbird", "", "192.0.2.1", time.Now()))
	s.Forget("bob", pc("imap", "Thunderbird", "", "192.0.2.1", time.Now()))
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "changes of 3 account(s) not written") || !errors.Is(err, ErrDown) {
		t.Errorf("Close with Redis down: %v", err)
	}
	if s.Dropped() != 3 {
		t.Errorf("dropped %d, want 3", s.Dropped())
	}
	s.Seen(refused, "carol", pc("imap", "Thunderbird", "", "192.0.2.1", time.Now()))
	if s.buf.Len() != 0 {
		t.Error("Seen after Close kept a change")
	}
	if err := s.Close(); err == nil {
		t.Error("a second Close forgot the first one's error")
	}
}

// A stored record holds only the fields of a PasswordClient, times as
// Unix ms, and nothing it was not given; every key has a TTL.
func TestClientsStoredFields(t *testing.T) {
	srv := startRedis(t)
	_, s := clientsNode(t, srv, "a", time.Hour, nil)
	raw := rawClient(t, srv)
	ctx := context.Background()
	now := time.Now()
	const secret = "Correct-Horse-Battery-Staple"
	s.Seen(refused, "alice", pc("imap", "Thunderbird", "128.0", "2001:db8::1", now))
	s.Seen(password, "alice", pc("pop3", "", "", "192.0.2.1", now))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind   auth.ClientKind
		fields string
	}{
		{refused, "count,first,ip,last,name,protocol,version"},
		{password, "count,first,ip,last,protocol"}, // no name, no version
	} {
		v, err := raw.Get(ctx, recordKey(tc.kind, "alice")).Result()
		if err != nil {
			t.Fatal(err)
		}
		var rows []map[string]any
		if err := json.Unmarshal([]byte(v), &rows); err != nil || len(rows) != 1 {
			t.Fatalf("%s: %q: %v", tc.kind, v, err)
		}
		if got := strings.Join(slices.Sorted(maps.Keys(rows[0])), ","); got != tc.fields {
			t.Errorf("%s: fields %s, want %s", tc.kind, got, tc.fields)
		}
		for _, f := range []string{"first", "last"} {
			if rows[0][f] != float64(now.UnixMilli()) {
				t.Errorf("%s: %s is %v, want %d", tc.kind, f, rows[0][f], now.UnixMilli())
			}
		}
	}
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil || len(keys) != 4 {
		t.Fatalf("keys %q %v, want two records and two indexes", keys, err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "kanmon:{c}:") {
			t.Errorf("key %q outside {c}", k)
		}
		dump, err := raw.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.ToLower(k+dump), strings.ToLower(secret)) {
			t.Errorf("key %q holds more than it was given", k)
		}
		if ttl := raw.PTTL(ctx, k).Val(); ttl <= 0 || ttl > auth.ClientRetention {
			t.Errorf("key %q has the TTL %v", k, ttl)
		}
	}
}

// An unreadable stored value counts as empty, on the way in (the script)
// and out (Clients, Accounts); a row that is readable but not clean is
// cleaned the same way by both.
func TestClientsGarbage(t *testing.T) {
	srv := startRedis(t)
	_, s := clientsNode(t, srv, "a", time.Hour, nil)
	raw := rawClient(t, srv)
	ctx := context.Background()
	now := time.Now()
	recent := now.Add(-time.Hour).UnixMilli()
	for i, tc := range []struct {
		name, value string
		want        string // Clients before the write: rows kept from value
	}{
		{"not JSON", "]]garbage[[", ""},
		{"empty", "", ""},
		{"null", "null", ""},
		{"object", `{"protocol":"imap"}`, ""},
		{"numbers", "[1,2,3]", ""},
		{"a string field of another type", fmt.Sprintf(`[{"protocol":7,"ip":"192.0.2.1","last":%d}]`, recent), ""},
		{"a number field of another type", `[{"protocol":"imap","ip":"192.0.2.1","last":"yesterday"}]`, ""},
		{"a number out of range", `[{"protocol":"imap","ip":"192.0.2.1","last":1e300}]`, ""},
		{"a null row", "[null]", ""},
		{"a row that is an array", fmt.Sprintf(`[{"protocol":"imap","ip":"192.0.2.1","last":%d},["imap"]]`, recent), ""},
		{"unclean", fmt.Sprintf(`[{"protocol":"imap","name":"  Thunder\u0001bird  ","version":"%s","ip":"192.0.2.1","last":%d,"first":%d,"count":-4}]`,
			strings.Repeat("9", 40), recent, recent+5000),
			describeClients([]auth.PasswordClient{{Protocol: "imap", Name: "Thunderbird", Version: strings.Repeat("9", 32), IP: "192.0.2.1",
				First: time.UnixMilli(recent), Last: time.UnixMilli(recent), Count: 1}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := fmt.Sprintf("garbage-%d", i)
			if err := raw.Set(ctx, recordKey(refused, user), tc.value, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := raw.ZAdd(ctx, indexKey(refused), redis.Z{Score: float64(recent), Member: user}).Err(); err != nil {
				t.Fatal(err)
			}
			list, err := s.Clients(refused, user)
			if err != nil || describeClients(list) != tc.want {
				t.Errorf("Clients: %s %v\nwant %s", describeClients(list), err, tc.want)
			}
			m, err := s.Accounts(refused, now.Add(-2*time.Hour))
			if err != nil || describeClients(m[user]) != tc.want {
				t.Errorf("Accounts: %s %v\nwant %s", describeClients(m[user]), err, tc.want)
			}
			fresh := pc("pop3", "", "", "192.0.2.9", now)
			s.Seen(refused, user, fresh)
			before, _ := s.Clients(refused, user)
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			fresh.First, fresh.Count = fresh.Last, 1
			want := describeClients([]auth.PasswordClient{fresh}) + tc.want
			if got := describeClients(stored(t, raw, recordKey(refused, user))); got != want || describeClients(before) != want {
				t.Errorf("stored %s\nbefore the write %s\nwant %s", got, describeClients(before), want)
			}
		})
	}
}

// The script applies auth's rules exactly: random changes, flushed at
// random, leave in Redis what auth.ClientPending.Apply computes in Go.
func TestClientsMatchAuth(t *testing.T) {
	srv := startRedis(t)
	_, s := clientsNode(t, srv, "a", time.Hour, nil)
	raw := rawClient(t, srv)
	rnd := rand.New(rand.NewPCG(7, 11))
	now := time.Now().Truncate(time.Millisecond)
	protocols := []string{"imap", "pop3", "submission"}
	names := []string{"", "Thunderbird", "Outlook", "K-9 Mail"}
	versions := []string{"", "1.0", "2.0"}
	users := []string{"alice", "Bob"}
	pick := func(list []string) string { return list[rnd.IntN(len(list))] }
	client := func() auth.PasswordClient {
		c := pc(pick(protocols), pick(names), pick(versions), fmt.Sprintf("192.0.2.%d", rnd.IntN(8)), now.Add(-time.Duration(rnd.IntN(40))*time.Hour))
		c.Count = int64(rnd.IntN(3))
		return c
	}

	model := auth.NewClientBuffer(0)
	want := map[auth.ClientSlot][]auth.PasswordClient{}
	check := func(step int) {
		t.Helper()
		for _, kind := range []auth.ClientKind{refused, password} {
			for _, u := range users {
				slot := auth.ClientSlot{Kind: kind, User: auth.ClientUserKey(u)}
				w := describeClients(want[slot])
				if got := describeClients(stored(t, raw, recordKey(kind, u))); got != w {
					t.Fatalf("step %d, %s %s:\nstored %s\nwant   %s", step, kind, u, got, w)
				}
			}
		}
	}
	flushes := 0
	for step := range 3000 {
		kind, user := refused, pick(users)
		if rnd.IntN(2) == 0 {
			kind = password
		}
		switch r := rnd.IntN(20); {
		case r == 0:
			// Before the flush, Clients shows what the flush will write.
			slot := auth.ClientSlot{Kind: kind, User: auth.ClientUserKey(user)}
			p, _ := model.Peek(slot)
			w := describeClients(p.Apply(want[slot], time.Now()))
			if got, err := s.Clients(kind, user); err != nil || describeClients(got) != w {
				t.Fatalf("step %d: Clients %s %v\nwant %s", step, describeClients(got), err, w)
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			for slot, p := range model.Take() {
				want[slot] = p.Apply(want[slot], time.Now())
			}
			check(step)
			flushes++
		case r < 4:
			c := client()
			s.Forget(user, c)
			model.Forget(user, c)
		default:
			c := client()
			s.Seen(kind, user, c)
			model.Seen(kind, user, c, time.Now())
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	for slot, p := range model.Take() {
		want[slot] = p.Apply(want[slot], time.Now())
	}
	check(-1)
	full := 0
	for _, list := range want {
		if len(list) == auth.MaxClientsPerAccount {
			full++
		}
	}
	if flushes < 50 || full == 0 {
		t.Errorf("%d flushes, %d full records: the test does not exercise what it should", flushes, full)
	}
}
