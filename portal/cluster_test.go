//go:build unix

package portal_test

// Cluster mode: two portal nodes (two portal.Servers over the same files,
// as two kanmon nodes behind one load balancer) share their sessions and
// the TOTP replay guard through a private, real redis-server.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/portal"
	"github.com/kanmon-mail/kanmon/redisstate"
)

var _ portal.SharedSessions = (*redisstate.PortalSessions)(nil)

// redisNode connects to r as one kanmon node does ([redis] url).
func redisNode(t *testing.T, r *redistest.Server, name string) *redisstate.Client {
	t.Helper()
	c, err := redisstate.Open(&config.Redis{URL: r.URL(), KeyPrefix: config.DefaultRedisKeyPrefix, Node: name,
		OnFailure: config.RedisOnFailureLocal}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// shared gives a portal the sessions and replay guard kept in c's Redis,
// as startPortal does with [redis].
func shared(c *redisstate.Client) func(*portal.Options) {
	return func(o *portal.Options) { o.Sessions, o.Replay = c.PortalSessions(), c.TOTPReplay() }
}

// node starts another portal over w's files and lockout guard: a second
// node behind the load balancer. Its options start as w's, without
// shared state.
func (w *world) node(options ...func(*portal.Options)) *portal.Server {
	w.t.Helper()
	po := w.opts
	po.Sessions, po.Replay = nil, nil
	for _, o := range options {
		o(&po)
	}
	srv, err := portal.New(po)
	if err != nil {
		w.t.Fatal(err)
	}
	return srv
}

// on sends c's next requests to node srv.
func (c *client) on(srv http.Handler) *client {
	c.srv = srv
	return c
}

// cluster starts a Redis and two portal nodes sharing it: w's own (A)
// and b.
func cluster(t *testing.T) (r *redistest.Server, w *world, b *portal.Server) {
	t.Helper()
	r = redistest.Start(t, redistest.Options{})
	w = newWorld(t, shared(redisNode(t, r, "node-a")))
	b = w.node(shared(redisNode(t, r, "node-b")))
	return r, w, b
}

// A session made on node A works on node B and back, through a whole
// enrollment that hops between them; a sign-out on one ends it on both.
func TestClusterSessionAcrossNodes(t *testing.T) {
	_, w, b := cluster(t)
	a := w.srv
	c := w.client(inside)
	c.on(a).signIn("alice", alicePW, "").wantRedirect("/account")
	c.on(b).get("/account").want(http.StatusOK, `id="signout"`, "alice")

	// The form of a page from A posts on B (the CSRF token is the
	// session's, wherever it is checked), and so on.
	c.on(b).post("/2fa/start", nil).wantRedirect("/2fa/enroll")
	page := c.on(a).get("/2fa/enroll").want(http.StatusOK, `id="totp-key"`)
	secret, err := otp.ParseKey(page.text("totp-key"))
	if err != nil {
		t.Fatal(err)
	}
	c.on(b).post("/2fa/enroll", form("code", otp.Code(secret, w.now()))).wantRedirect("/2fa/codes")
	if codes := c.on(a).get("/2fa/codes").want(http.StatusOK).all("one-time-code"); len(codes) != auth.OneTimeCodeCount {
		t.Fatalf("%d one-time codes on the other node", len(codes))
	}
	c.on(b).get("/account").want(http.StatusOK, `id="signout"`)

	// A wrong CSRF token is refused on either node.
	c.on(a).post("/2fa/start", form("csrf", strings.Repeat("x", len(c.csrf)))).want(http.StatusForbidden)

	token := c.session()
	c.on(a).post("/signout", nil).wantRedirect("/signin")
	stale := w.client(inside).on(b)
	stale.cookies[sessionCookie] = &http.Cookie{Name: sessionCookie, Value: token}
	stale.get("/account").wantRedirect("/signin")

	// The idle lifetime holds on every node: a session idle too long on A
	// is gone on B, whatever its TTL in Redis says.
	c.on(b).signIn("carol", carolPW, "").wantRedirect("/account")
	w.advance(w.opts.SessionIdle)
	c.on(a).get("/account").wantRedirect("/signin")
}

// A TOTP code used on node A is refused on node B, and so is an older
// code; the replay guard is one for the cluster.
func TestClusterTOTPCodeOnce(t *testing.T) {
	_, w, b := cluster(t)
	a := w.srv
	c := w.client(inside).on(a)
	c.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, _ := c.enroll() // on A: the enrollment's step is used
	w.advance(otp.Period)
	code := otp.Code(secret, w.now())

	w.client("203.0.113.20").on(a).signIn("alice", alicePW, code).wantRedirect("/account")
	if got := w.client("203.0.113.21").on(b).signIn("alice", alicePW, code).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("the code used on A, again on B: %q", got)
	}
	older := otp.Code(secret, w.now().Add(-otp.Period)) // the enrollment's code, still within the skew
	if got := w.client("203.0.113.22").on(b).signIn("alice", alicePW, older).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("an older code on B: %q", got)
	}
	w.wantLog(`reason="wrong, used or replayed code"`)

	// The next step's code works, once, on B.
	w.advance(otp.Period)
	next := otp.Code(secret, w.now())
	w.client("203.0.113.23").on(b).signIn("alice", alicePW, next).wantRedirect("/account")
	if got := w.client("203.0.113.24").on(a).signIn("alice", alicePW, next).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("the code used on B, again on A: %q", got)
	}
}

// Changing 2FA on one node ends the account's other sessions on every
// node; one user's sessions are capped across the nodes together.
func TestClusterOtherSessionsEnd(t *testing.T) {
	_, w, b := cluster(t)
	a := w.srv
	one := w.client(inside).on(a)
	one.signIn("alice", alicePW, "").wantRedirect("/account")
	two := w.client("10.9.9.9").on(b)
	two.signIn("alice", alicePW, "").wantRedirect("/account")
	carol := w.client(inside).on(b)
	carol.signIn("carol", carolPW, "").wantRedirect("/account")
	one.enroll() // on A
	w.wantLog("other_sessions_ended=1")
	two.get("/account").wantRedirect("/signin")
	one.on(b).get("/account").want(http.StatusOK)
	carol.on(a).get("/account").want(http.StatusOK) // another user's stays

	// MaxSessionsPerUser more sign-ins, alternating nodes: carol's first
	// (the least recently used) is pushed out, the others live.
	var browsers []*client
	for i := range portal.MaxSessionsPerUser {
		node := http.Handler(a)
		if i%2 == 1 {
			node = b
		}
		time.Sleep(2 * time.Millisecond) // distinct expiry times in Redis
		c := w.client(inside).on(node)
		c.signIn("Carol", carolPW, "").wantRedirect("/account")
		browsers = append(browsers, c)
	}
	carol.get("/account").wantRedirect("/signin") // the oldest of all
	for i, c := range browsers {
		if r := c.get("/account"); r.status != http.StatusOK {
			t.Errorf("sign-in %d: %d, want it live", i, r.status)
		}
	}
}

// Redis down: a signed-in page and a sign-in get the "unavailable" page
// (no 500, no panic, the backend is not asked), and nothing is served
// from a session that could not be read. When Redis is back (empty, as a
// restarted Redis without persistence is), sign-ins work again and the
// old sessions are gone, never served.
func TestClusterRedisDown(t *testing.T) {
	r, w, _ := cluster(t)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.get("/account").want(http.StatusOK)
	r.Kill()

	c.get("/account").want(http.StatusServiceUnavailable, "Temporarily unavailable").lacks(`id="signout"`)
	c.get("/").want(http.StatusServiceUnavailable, "Temporarily unavailable")
	c.get("/signin").want(http.StatusServiceUnavailable, "Temporarily unavailable")
	c.post("/signout", nil).want(http.StatusServiceUnavailable, "Temporarily unavailable")
	if c.session() == "" {
		t.Error("a sign-out that ended nothing cleared the cookie")
	}
	checks := w.checks.Load()
	d := w.client(inside)
	d.signIn("carol", carolPW, "").want(http.StatusServiceUnavailable, "Temporarily unavailable").lacks(failedText)
	if d.session() != "" {
		t.Error("a sign-in with Redis down set a session cookie")
	}
	if got := w.checks.Load(); got != checks {
		t.Errorf("the backend was asked %d times with Redis down", got-checks)
	}
	w.wantLog("portal sessions unavailable")
	if strings.Contains(w.logs.String(), "panic") {
		t.Errorf("log:\n%s", w.logs.String())
	}

	r.Start(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := d.signIn("carol", carolPW, "")
		if res.status == http.StatusSeeOther {
			res.wantRedirect("/account")
			break
		}
		res.want(http.StatusServiceUnavailable)
		if time.Now().After(deadline) {
			t.Fatal("sign-ins still refused 10 s after Redis came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.get("/account").want(http.StatusOK)
	c.get("/account").wantRedirect("/signin")
}

// Redis holds no secret in clear: after a pending enrollment, new
// one-time codes and a new app passcode are on the pages, no key or
// value in Redis holds any of them, the session token, its CSRF token or
// a password; a session's record is named by the SHA-256 of its token.
func TestClusterNoSecretInRedis(t *testing.T) {
	r, w, b := cluster(t)
	rc := r.Client(t)
	c := w.client(inside)
	c.signIn("alice", alicePW, "").wantRedirect("/account")
	token := c.session()
	c.get("/account").want(http.StatusOK)
	csrf := c.csrf
	c.post("/2fa/start", nil).wantRedirect("/2fa/enroll")
	key := c.on(b).get("/2fa/enroll").want(http.StatusOK).text("totp-key")
	secret, err := otp.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dump := redisDump(t, rc)
	h := sha256.Sum256([]byte(token))
	if !strings.Contains(dump, "kanmon:{p}:s:"+hex.EncodeToString(h[:])) {
		t.Errorf("no record named by the token's SHA-256:\n%s", dump)
	}
	// The secret as the page shows it, and as an encoder might write it.
	key64, keyHex := base64.StdEncoding.EncodeToString(secret), hex.EncodeToString(secret)
	noSecretIn(t, "with a pending enrollment", dump, token, csrf, alicePW, key, key64, keyHex)

	codes := c.follow(c.post("/2fa/enroll", form("code", otp.Code(secret, w.now()))).wantRedirect("/2fa/codes")).
		want(http.StatusOK).all("one-time-code")
	noSecretIn(t, "with new one-time codes", redisDump(t, rc), append([]string{token, key, key64}, codes...)...)

	c.on(w.srv).get("/account").want(http.StatusOK)
	page := c.follow(c.post("/passcodes/add", form("app", "Thunderbird")).wantRedirect("/passcodes/new"))
	grouped := page.want(http.StatusOK).text("passcode")
	if len(strings.ReplaceAll(grouped, " ", "")) != 16 {
		t.Fatalf("passcode %q", grouped)
	}
	dump = redisDump(t, rc)
	if !strings.Contains(dump, "kanmon:{p}:u:alice") || !strings.Contains(dump, "kanmon:{p}:t:alice") {
		t.Errorf("no user index or replay step:\n%s", dump)
	}
	noSecretIn(t, "with a new passcode", dump, grouped, token, c.csrf, key, key64)
}

// redisDump is every key of rc's database and its value (a string's;
// a sorted set's members and scores), a key a line.
func redisDump(t *testing.T, rc *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		typ, err := rc.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "string":
			v, err := rc.Get(ctx, k).Result()
			if err != nil && err != redis.Nil {
				t.Fatal(err)
			}
			b.WriteString(" " + v)
		case "zset":
			zs, err := rc.ZRangeWithScores(ctx, k, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, z := range zs {
				fmt.Fprintf(&b, " %v=%v", z.Member, z.Score)
			}
		default:
			t.Errorf("key %s of type %s", k, typ)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// noSecretIn fails when dump holds a secret, as is, without its spaces,
// in either case, or any of its space-separated groups of 6 or more.
func noSecretIn(t *testing.T, when, dump string, secrets ...string) {
	t.Helper()
	if dump == "" {
		t.Fatalf("%s: Redis is empty", when)
	}
	lower := strings.ToLower(dump)
	for _, s := range secrets {
		for _, f := range append([]string{s, strings.ReplaceAll(s, " ", "")}, strings.Fields(s)...) {
			if len(f) >= 6 && strings.Contains(lower, strings.ToLower(f)) {
				t.Errorf("%s: Redis holds the secret %q", when, f)
			}
		}
	}
}
