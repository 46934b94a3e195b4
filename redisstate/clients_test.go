package redisstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/redistest"
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
