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
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
)

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
