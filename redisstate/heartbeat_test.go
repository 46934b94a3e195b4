package redisstate

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/admin"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
)

// beatInterval is the tests' heartbeat interval; the TTL is three.
const beatInterval = 100 * time.Millisecond

// fakeRegistry is a node's live sessions, changed by the test.
type fakeRegistry struct {
	mu   sync.Mutex
	list []admin.Session
}

func (r *fakeRegistry) set(list ...admin.Session) {
	r.mu.Lock()
	r.list = list
	r.mu.Unlock()
}

func (r *fakeRegistry) sessions() []admin.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]admin.Session(nil), r.list...)
}

// beatingNode is a Client and a Heartbeat named name.
type beatingNode struct {
	c   *Client
	hb  *Heartbeat
	reg *fakeRegistry
}

// startBeating starts node name on the Redis at url, beating every
// beatInterval and rewriting an unchanged list every 3 beats. The test's
// end closes it (close) if the test has not.
func startBeating(t testing.TB, url, name string, log *slog.Logger) *beatingNode {
	t.Helper()
	return startBeatingWith(t, url, name, log, HeartbeatOptions{Interval: beatInterval, SessionsRefresh: 3})
}

// startBeatingWith is startBeating with opts; a nil log discards.
func startBeatingWith(t testing.TB, url, name string, log *slog.Logger, opts HeartbeatOptions) *beatingNode {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &beatingNode{c: stateClient(t, url, name), reg: &fakeRegistry{}}
	n.hb = NewHeartbeat(n.c, opts, log)
	n.hb.Start(n.reg.sessions)
	t.Cleanup(func() { n.close(t) })
	return n
}

// close closes the node's Heartbeat, which must leave without an error
// (but for Redis being down), and its Client. Calling it again does
// nothing more.
func (n *beatingNode) close(t testing.TB) {
	t.Helper()
	if err := n.hb.Close(); err != nil && !errors.Is(err, ErrDown) {
		t.Error(err)
	}
	n.c.Close()
}

func session(user, ip string, since time.Time, in int64) admin.Session {
	return admin.Session{User: user, Protocol: "imap", ClientIP: ip, Method: "passcode", App: "Thunderbird", Client: "Thunderbird 128", Since: since.Truncate(time.Second), BytesIn: in, BytesOut: 2 * in}
}

// describe lists sessions as "node/user/bytes in" for messages and
// comparisons.
func describe(list []admin.Session) string {
	var parts []string
	for _, s := range list {
		parts = append(parts, fmt.Sprintf("%s/%s/%d", s.Node, s.User, s.BytesIn))
	}
	return strings.Join(parts, " ")
}

func sessionsOf(t testing.TB, n *beatingNode) string {
	t.Helper()
	list, err := n.hb.Sessions(context.Background())
	if err != nil {
		return "error: " + err.Error()
	}
	return describe(list)
}

func TestHeartbeatTwoNodesSeeEachOther(t *testing.T) {
	srv := startRedis(t)
	since := time.Now().Add(-time.Minute)
	a, b := startBeating(t, srv.URL(), "node-a", nil), startBeating(t, srv.URL(), "node-b", nil)
	a.reg.set(session("alice", "192.0.2.1", since, 10))
	b.reg.set(session("bob", "192.0.2.2", since, 20), session("carol", "192.0.2.3", since.Add(time.Second), 30))

	want := "node-a/alice/10 node-b/bob/20 node-b/carol/30"
	eventually(t, "both nodes to list all three sessions", func() bool {
		return sessionsOf(t, a) == want && sessionsOf(t, b) == want
	})
	// Each node counts the nodes alive at its own beat, which may come
	// a beat after the other's sessions show.
	eventually(t, "both nodes to count two nodes alive", func() bool {
		return a.hb.NodesAlive() == 2 && b.hb.NodesAlive() == 2
	})
	list, _ := a.hb.Sessions(context.Background())
	if got := list[1]; got.Protocol != "imap" || got.ClientIP != "192.0.2.2" || got.App != "Thunderbird" || got.Client != "Thunderbird 128" || !got.Since.Equal(since.Truncate(time.Second)) || got.BytesOut != 40 {
		t.Errorf("node b's session as node a reads it: %+v", got)
	}
	nodes, err := a.hb.Nodes(context.Background())
	if err != nil || len(nodes) != 2 || nodes[1].Name != "node-b" || nodes[1].Sessions != 2 || nodes[1].PID == 0 || nodes[1].Beat.IsZero() {
		t.Errorf("Nodes: %+v %v", nodes, err)
	}

	// A login on node b shows on node a at b's next beat; a change of
	// byte counters only, within SessionsRefresh beats.
	b.reg.set(session("bob", "192.0.2.2", since, 20), session("carol", "192.0.2.3", since.Add(time.Second), 30), session("dave", "192.0.2.4", since.Add(2*time.Second), 40))
	eventually(t, "node a to see dave", func() bool { return strings.Contains(sessionsOf(t, a), "node-b/dave/40") })
	b.reg.set(session("bob", "192.0.2.2", since, 21), session("carol", "192.0.2.3", since.Add(time.Second), 30), session("dave", "192.0.2.4", since.Add(2*time.Second), 40))
	eventually(t, "node a to see bob's new byte count", func() bool { return strings.Contains(sessionsOf(t, a), "node-b/bob/21") })

	// A clean stop leaves at once.
	b.close(t)
	if got := sessionsOf(t, a); got != "node-a/alice/10" {
		t.Errorf("after node b's Close, node a lists %q", got)
	}
	eventually(t, "NodesAlive 1", func() bool { return a.hb.NodesAlive() == 1 })
}

func TestHeartbeatDeadNodeDisappears(t *testing.T) {
	srv := startRedis(t)
	a, b := startBeating(t, srv.URL(), "node-a", nil), startBeating(t, srv.URL(), "node-b", nil)
	b.reg.set(session("bob", "192.0.2.2", time.Now(), 1))
	eventually(t, "node a to see node b", func() bool { return a.hb.NodesAlive() == 2 && sessionsOf(t, a) == "node-b/bob/1" })

	// Node b dies: it stops beating without a word.
	b.hb.halt()
	died := time.Now()
	eventually(t, "node b to disappear", func() bool { return sessionsOf(t, a) == "" && a.hb.NodesAlive() == 1 })
	if d := time.Since(died); d < 2*beatInterval {
		t.Errorf("node b disappeared after %v, before its TTL (%v)", d, heartbeatBeats*beatInterval)
	}
	nodes, err := a.hb.Nodes(context.Background())
	if err != nil || len(nodes) != 1 || nodes[0].Name != "node-a" {
		t.Errorf("Nodes after node b died: %+v %v", nodes, err)
	}
	if n, err := rawClient(t, srv).Exists(context.Background(), "kanmon:{n}:info:node-b", "kanmon:{n}:sess:node-b").Result(); err != nil || n != 0 {
		t.Errorf("node b's keys: %d %v", n, err)
	}
}

func TestHeartbeatRedisRestart(t *testing.T) {
	srv := startRedis(t)
	a, b := startBeating(t, srv.URL(), "node-a", nil), startBeating(t, srv.URL(), "node-b", nil)
	a.reg.set(session("alice", "192.0.2.1", time.Now(), 1))
	b.reg.set(session("bob", "192.0.2.2", time.Now(), 2))
	eventually(t, "the nodes to see each other", func() bool {
		return sessionsOf(t, a) == "node-a/alice/1 node-b/bob/2" && a.hb.NodesAlive() == 2
	})

	srv.Kill()
	eventually(t, "node a to see Redis down", func() bool { return !a.c.Up() })
	time.Sleep(4 * beatInterval)
	if a.hb.NodesAlive() != 2 {
		t.Errorf("NodesAlive with Redis down: %d, want the last known 2", a.hb.NodesAlive())
	}
	list, err := a.hb.Sessions(context.Background())
	var partial *admin.PartialError
	if !errors.As(err, &partial) || describe(list) != "node-a/alice/1" {
		t.Errorf("Sessions with Redis down: %q %v; want node a's own and a PartialError", describe(list), err)
	}

	// Redis comes back empty (no persistence): the beats resume and
	// rewrite everything, without a restart of the nodes.
	srv.Start(t)
	eventually(t, "the nodes to see each other again", func() bool {
		return sessionsOf(t, a) == "node-a/alice/1 node-b/bob/2" && sessionsOf(t, b) == "node-a/alice/1 node-b/bob/2"
	})
	if a.hb.NodesAlive() != 2 {
		t.Errorf("NodesAlive after the restart: %d", a.hb.NodesAlive())
	}
}

func TestHeartbeatRewritesALostList(t *testing.T) {
	srv := startRedis(t)
	a := startBeating(t, srv.URL(), "node-a", nil)
	// Node b rewrites an unchanged list only every 1000 beats.
	b := startBeatingWith(t, srv.URL(), "node-b", nil, HeartbeatOptions{Interval: beatInterval, SessionsRefresh: 1000})
	b.reg.set(session("bob", "192.0.2.2", time.Now(), 2))
	eventually(t, "node a to see bob", func() bool { return sessionsOf(t, a) == "node-b/bob/2" })
	if err := rawClient(t, srv).Del(context.Background(), "kanmon:{n}:sess:node-b").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node b to rewrite its lost list", func() bool { return sessionsOf(t, a) == "node-b/bob/2" })
}

func TestHeartbeatBeforeStart(t *testing.T) {
	srv := startRedis(t)
	a := startBeating(t, srv.URL(), "node-a", nil)
	a.reg.set(session("alice", "192.0.2.1", time.Now(), 1))
	c := stateClient(t, srv.URL(), "node-c")
	hb := NewHeartbeat(c, HeartbeatOptions{Interval: beatInterval}, slog.New(slog.DiscardHandler))
	if hb.NodesAlive() != 1 {
		t.Errorf("NodesAlive before Start: %d", hb.NodesAlive())
	}
	eventually(t, "node a's beat", func() bool {
		list, err := hb.Sessions(context.Background())
		return err == nil && describe(list) == "node-a/alice/1"
	})
	if err := hb.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	hb.Start(func() []admin.Session { panic("Start after Close beats") })
}

func TestHeartbeatWarnsOfTwoNodesWithOneName(t *testing.T) {
	srv := startRedis(t)
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	startBeating(t, srv.URL(), "node-a", log)
	startBeating(t, srv.URL(), "node-a", log) // a twin
	eventually(t, "the warning", func() bool {
		return strings.Contains(logs.String(), "another kanmon node beats under this node's name")
	})
}

func TestSessionsEncoding(t *testing.T) {
	since := time.Unix(1_800_000_000, 0)
	list := []admin.Session{
		{User: "alice", Protocol: "imap", ClientIP: "2001:db8::1", Method: "passcode", App: "Thunder\x1fbird", Client: "odd\x1eclient", Since: since, BytesIn: 1 << 40, BytesOut: 0},
		{User: "bob", Protocol: "submission", ClientIP: "192.0.2.1", Method: "passthrough", Since: since.Add(time.Second)},
	}
	h := &Heartbeat{}
	h.compressor, _ = flate.NewWriter(&h.compressBuf, flate.BestSpeed)
	blob := h.encode(list)
	got, err := decodeSessions([]byte(blob), "n1")
	if err != nil || len(got) != 2 {
		t.Fatalf("decode: %+v %v", got, err)
	}
	want := list[0]
	want.Node, want.App, want.Client = "n1", "Thunder?bird", "odd?client"
	if got[0] != want || got[1].User != "bob" || got[1].App != "" || !got[1].Since.Equal(since.Add(time.Second)) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if _, err := decodeSessions([]byte("zjunk"), "n1"); err == nil {
		t.Error("an unknown format decodes")
	}
	if l, err := decodeSessions([]byte(h.encode(nil)), "n1"); err != nil || len(l) != 0 {
		t.Errorf("empty list: %v %v", l, err)
	}

	// 10,000 sessions of a busy node: a compact blob.
	var many []admin.Session
	for i := range 10_000 {
		many = append(many, admin.Session{
			User: fmt.Sprintf("user%04d", i%4000), Protocol: []string{"imap", "pop3", "submission"}[i%3],
			ClientIP: fmt.Sprintf("10.%d.%d.%d", i%7, (i*37)%256, (i*101)%256), Method: "passcode", App: []string{"Thunderbird", "iPhone", "Outlook"}[i%3],
			Client: "Thunderbird 128.3.1", Since: since.Add(time.Duration(i*7) * time.Second), BytesIn: int64(i * 1013), BytesOut: int64(i * 7919),
		})
	}
	blob = h.encode(many)
	t.Logf("10,000 sessions: %d bytes (%.1f a session)", len(blob), float64(len(blob))/10_000)
	if len(blob) > 400_000 {
		t.Errorf("10,000 sessions take %d bytes", len(blob))
	}
	back, err := decodeSessions([]byte(blob), "n1")
	if err != nil || len(back) != 10_000 || back[9999].BytesOut != 9999*7919 {
		t.Errorf("decode of 10,000: %d %v", len(back), err)
	}
	if fingerprint(many) == fingerprint(many[1:]) {
		t.Error("fingerprint ignores a logout")
	}
	moved := append([]admin.Session{many[len(many)-1]}, many[:len(many)-1]...)
	moved[5].BytesIn++
	if fingerprint(many) != fingerprint(moved) {
		t.Error("fingerprint depends on order or byte counters")
	}
	if !bytes.HasPrefix([]byte(blob), []byte{sessionsFormat}) {
		t.Error("blob without its format byte")
	}
}
