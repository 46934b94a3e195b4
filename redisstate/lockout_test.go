//go:build unix

package redisstate_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/redisstate"
)

// testKey keys the fingerprints: every node of a cluster shares the pepper.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// node is one kanmon node's lockout: its own Guard in its own state
// directory, shared through Redis.
type node struct {
	*redisstate.Lockout
	local  *lockout.Guard
	client *redisstate.Client
}

// nodeOptions tune newNode.
type nodeOptions struct {
	onFailure string // default local
	nodes     int    // nodes alive, for the divisor; default 1
	edit      func(*lockout.Options)
}

// newNode starts a node on the Redis at url.
func newNode(t testing.TB, url string, o nodeOptions) *node {
	t.Helper()
	if o.onFailure == "" {
		o.onFailure = config.RedisOnFailureLocal
	}
	if o.nodes == 0 {
		o.nodes = 1
	}
	opts := lockout.Options{}
	if o.edit != nil {
		o.edit(&opts)
	}
	g, err := lockout.Open(filepath.Join(t.TempDir(), "kanmon.db"), testKey, opts)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := redisstate.Open(&config.Redis{URL: url, KeyPrefix: "kanmon:", Node: t.Name(), OnFailure: o.onFailure}, log)
	if err != nil {
		t.Fatal(err)
	}
	l := redisstate.NewLockout(c, g, o.onFailure, func() int { return o.nodes }, log)
	t.Cleanup(func() {
		l.Close()
		c.Close()
		g.Close()
	})
	return &node{Lockout: l, local: g, client: c}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// wantVerdict fails unless v has the outcome (and, for Locked, the scope).
func wantVerdict(t testing.TB, what string, v lockout.Verdict, o lockout.Outcome, s lockout.Scope) {
	t.Helper()
	if v.Outcome != o || (o == lockout.Locked && v.Scope != s) {
		t.Fatalf("%s: verdict %q, want outcome %d scope %v", what, v, o, s)
	}
}

// waitUntil polls cond for up to 15 s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The account+ip threshold is global: 5 failures on node A and 5 on node
// B lock the pair on both, as 10 on one node would.
func TestSharedThresholdAcrossNodes(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	a, b := newNode(t, r.URL(), nodeOptions{}), newNode(t, r.URL(), nodeOptions{})
	from := ip("198.51.100.7")
	for i := range 9 {
		n := a
		if i%2 == 1 {
			n = b
		}
		wantVerdict(t, fmt.Sprint("attempt ", i+1), n.Check("alice", from, fmt.Sprint("guess", i)), lockout.Allow, 0)
		info := n.Failure("alice", from, fmt.Sprint("guess", i))
		if !info.Counted || info.AccountIP != i+1 || info.Locked != lockout.ScopeNone {
			t.Fatalf("failure %d: %+v, want counted, account_ip=%d, no lock", i+1, info, i+1)
		}
	}
	info := b.Failure("Alice", from, "guess9") // another spelling, the same account
	if info.AccountIP != 10 || info.Locked != lockout.ScopeAccountIP {
		t.Fatalf("10th failure: %+v, want account_ip=10 and the account+ip lock", info)
	}
	wantVerdict(t, "node A after the 10th", a.Check("alice", from, "anything"), lockout.Locked, lockout.ScopeAccountIP)
	wantVerdict(t, "node B after the 10th", b.Check("ALICE", from, "anything"), lockout.Locked, lockout.ScopeAccountIP)
	wantVerdict(t, "another address", a.Check("alice", ip("198.51.100.8"), "x"), lockout.Allow, 0)
	// kanmon lockout list on either node shows the lock, with the count.
	for name, n := range map[string]*node{"A": a, "B": b} {
		list := n.List()
		if len(list) != 1 || list[0].Scope != lockout.ScopeAccountIP || list[0].User != "alice" || list[0].IP != from || list[0].Failures != 10 {
			t.Fatalf("node %s List() = %v, want the one account+ip lock with 10 failures", name, list)
		}
		if c := n.LockCounts(); c["account+ip"] != 1 || c["account"] != 0 {
			t.Fatalf("node %s LockCounts() = %v", name, c)
		}
	}
	// kanmon lockout clear on node A frees the pair on node B.
	if n := a.Clear(from.String()); n < 1 {
		t.Fatalf("Clear removed %d entries", n)
	}
	wantVerdict(t, "node B after clear", b.Check("alice", from, "x"), lockout.Allow, 0)
	if list := b.List(); len(list) != 0 {
		t.Fatalf("List() after clear = %v", list)
	}
}

// A stale secret counts once in the whole cluster, and a node that did
// not see it refuses it without the backend; a success on any node makes
// the address known-good everywhere and forgets the secret.
func TestStaleSecretAndKnownGoodAcrossNodes(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	a, b := newNode(t, r.URL(), nodeOptions{}), newNode(t, r.URL(), nodeOptions{})
	phone := ip("192.0.2.10")
	wantVerdict(t, "first try", a.Check("bob", phone, "old-password"), lockout.Allow, 0)
	if info := a.Failure("bob", phone, "old-password"); !info.Counted {
		t.Fatalf("first failure not counted: %+v", info)
	}
	wantVerdict(t, "node B, same wrong secret", b.Check("bob", phone, "old-password"), lockout.Stale, 0)
	if info := b.Failure("bob", phone, "old-password"); info.Counted || info.AccountIP != 1 {
		t.Fatalf("repeat on node B: %+v, want uncounted with account_ip=1", info)
	}
	wantVerdict(t, "node B, another secret", b.Check("bob", phone, "new-password"), lockout.Allow, 0)

	// 50 failures of bob from elsewhere lock the account, but not for the
	// address he logged in from on node A.
	a.Success("bob", phone)
	waitUntil(t, "the success to reach Redis", func() bool { return b.KnownGoodIP(phone) })
	wantVerdict(t, "the forgotten secret", b.Check("bob", phone, "old-password"), lockout.Allow, 0)
	for i := range 50 {
		b.Failure("bob", ip(fmt.Sprintf("203.0.113.%d", i)), fmt.Sprint("spray", i))
	}
	wantVerdict(t, "attacker address", a.Check("bob", ip("203.0.113.200"), "x"), lockout.Locked, lockout.ScopeAccount)
	wantVerdict(t, "bob's known-good address", a.Check("bob", phone, "right"), lockout.Allow, 0)
}

// The recheck of a remembered wrong secret is due once per interval in
// the whole cluster, not once per node.
func TestRecheckOncePerCluster(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	edit := func(o *lockout.Options) { o.RecheckInterval = 300 * time.Millisecond }
	a, b := newNode(t, r.URL(), nodeOptions{edit: edit}), newNode(t, r.URL(), nodeOptions{edit: edit})
	from := ip("192.0.2.20")
	a.Failure("carol", from, "stale")
	wantVerdict(t, "before the interval", b.Check("carol", from, "stale"), lockout.Stale, 0)
	time.Sleep(350 * time.Millisecond)
	v := b.Check("carol", from, "stale")
	if v.Outcome != lockout.Allow || !v.Recheck {
		t.Fatalf("after the interval, node B: %q, want allowed: recheck", v)
	}
	wantVerdict(t, "node A right after B's recheck", a.Check("carol", from, "stale"), lockout.Stale, 0)
}

// Exempt (campus) addresses count in no IP or prefix scope, in Redis as
// on one node.
func TestExemptAddressesShared(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	a := newNode(t, r.URL(), nodeOptions{})
	a.SetExempt([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	for i := range 40 {
		info := a.Failure(fmt.Sprint("user", i), ip("10.1.2.3"), "x")
		if info.IP != 0 || info.Prefix != 0 {
			t.Fatalf("campus failure %d counted in the address scopes: %+v", i, info)
		}
	}
	wantVerdict(t, "campus address", a.Check("someone", ip("10.1.2.3"), "x"), lockout.Allow, 0)
	for i := range 30 {
		a.FailureAddress(ip("203.0.113.9"))
		_ = i
	}
	wantVerdict(t, "spraying address", a.Check("someone", ip("203.0.113.9"), "x"), lockout.Locked, lockout.ScopeIP)
}

// Redis killed: with on_failure = local each node goes on with its own
// counters, thresholds divided by the nodes alive, and the locks seen in
// Redis hold; when Redis is back, the shared counters are enforced again
// without a restart. With on_failure = closed, Check says Unavailable.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	local := newNode(t, r.URL(), nodeOptions{nodes: 2})
	closed := newNode(t, r.URL(), nodeOptions{onFailure: config.RedisOnFailureClosed})
	locked := ip("198.51.100.50")
	for i := range 10 {
		local.Failure("dave", locked, fmt.Sprint("g", i))
	}
	wantVerdict(t, "before the outage", local.Check("dave", locked, "x"), lockout.Locked, lockout.ScopeAccountIP)

	r.Kill()
	wantVerdict(t, "closed node, Redis down", closed.Check("erin", ip("192.0.2.1"), "x"), lockout.Unavailable, 0)
	wantVerdict(t, "a lock seen in Redis, kept", local.Check("dave", locked, "x"), lockout.Locked, lockout.ScopeAccountIP)
	if local.client.Up() {
		t.Fatal("the client still says Redis is up")
	}
	// Two nodes alive: the account+ip threshold of 10 is 5 on each.
	from := ip("198.51.100.60")
	for i := range 4 {
		if info := local.Failure("frank", from, fmt.Sprint("g", i)); info.Locked != lockout.ScopeNone {
			t.Fatalf("failure %d locked: %+v", i+1, info)
		}
	}
	if info := local.Failure("frank", from, "g4"); info.Locked != lockout.ScopeAccountIP {
		t.Fatalf("5th failure with Redis down and 2 nodes: %+v, want the account+ip lock", info)
	}
	wantVerdict(t, "local lock", local.Check("frank", from, "x"), lockout.Locked, lockout.ScopeAccountIP)

	r.Start(t) // empty: nothing was saved
	waitUntil(t, "the client to see Redis again", local.client.Up)
	waitUntil(t, "the closed node to see Redis again", closed.client.Up)
	wantVerdict(t, "closed node, Redis back", closed.Check("erin", ip("192.0.2.1"), "x"), lockout.Allow, 0)
	wantVerdict(t, "shared again (frank's local lock is not shared)", local.Check("frank", from, "x"), lockout.Allow, 0)
	for i := range 10 {
		local.Failure("gina", from, fmt.Sprint("g", i))
	}
	wantVerdict(t, "a new shared lock", closed.Check("gina", from, "x"), lockout.Locked, lockout.ScopeAccountIP)
}

// Redis holds no secret: only names, addresses and keyed fingerprints.
func TestNoSecretInRedis(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	a := newNode(t, r.URL(), nodeOptions{})
	const secret = "Correct-Horse-Battery-Staple"
	a.Failure("hank", ip("192.0.2.30"), secret)
	a.Success("hank", ip("192.0.2.31"))
	rc := r.Client(t)
	ctx := t.Context()
	waitUntil(t, "the success to be written", func() bool { return rc.Exists(ctx, "kanmon:{l}:gi:192.0.2.31").Val() == 1 })
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		dump, err := rc.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if containsFold(k+dump, secret) {
			t.Fatalf("key %q holds the secret", k)
		}
		if ttl := rc.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %q has no TTL (%v)", k, ttl)
		}
	}
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool {
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// The shared lockout leaves no goroutine behind: its success writer and
// the client's watcher (started by an outage) end with Close. Not
// parallel, so that no other test's goroutines are running.
func TestLockoutNoLeak(t *testing.T) {
	leaks := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/kanmon-mail/kanmon/internal/redistest.(*Server).launch.func1"),
	}
	r := redistest.Start(t, redistest.Options{})
	t.Run("node", func(t *testing.T) {
		n := newNode(t, r.URL(), nodeOptions{})
		n.Failure("ivan", ip("192.0.2.40"), "x")
		n.Success("ivan", ip("192.0.2.41"))
		r.Kill()
		n.Check("ivan", ip("192.0.2.40"), "x") // starts the watcher
		r.Start(t)
		waitUntil(t, "Redis to be seen again", n.client.Up)
		n.Success("ivan", ip("192.0.2.42"))
	})
	goleak.VerifyNone(t, leaks...)
}
