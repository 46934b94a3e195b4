package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/loopback"
	"github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy/relay"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// regWorld is a Server with no listener, whose sessions the test builds
// by hand: each one a relay between two loopback socket pairs.
type regWorld struct {
	t      *testing.T
	srv    *Server
	pepper auth.Pepper
	codes  map[string]string // app -> passcode
	hashes map[string]string // app -> hash
	wg     sync.WaitGroup
	ctx    context.Context
	m      *metrics.Metrics
}

func newRegWorld(t *testing.T) *regWorld {
	w := &regWorld{t: t, pepper: auth.Pepper(strings.Repeat("p", 32)), codes: map[string]string{}, hashes: map[string]string{}}
	for _, app := range []string{"A", "B", "D"} {
		code, err := auth.GeneratePasscode()
		if err != nil {
			t.Fatal(err)
		}
		h, err := auth.HashPasscode(w.pepper, code)
		if err != nil {
			t.Fatal(err)
		}
		w.codes[app], w.hashes[app] = code, h
	}
	w.m = metrics.New()
	w.srv = NewServer(slog.New(slog.DiscardHandler), w.runtime([]string{"A", "B", "D"}, nil), ServerOptions{Metrics: w.m})
	ctx, cancel := context.WithCancel(context.Background())
	w.ctx = ctx
	t.Cleanup(func() { cancel(); w.srv.CloseSessions(); w.wg.Wait() })
	return w
}

// runtime is a Generation whose policy gives alice the passcodes apps (nil:
// alice has no 2FA) and turns 2FA on for the users in twoFA too.
func (w *regWorld) runtime(apps, twoFA []string) *Generation {
	accts := &auth.Accounts{}
	if apps != nil {
		alice := auth.Account{User: "alice"}
		for _, app := range apps {
			alice.Passcodes = append(alice.Passcodes, auth.AppPasscode{App: app, Hash: w.hashes[app]})
		}
		accts.Accounts = append(accts.Accounts, alice)
	}
	for _, u := range twoFA {
		accts.Accounts = append(accts.Accounts, auth.Account{User: u})
	}
	pol := auth.NewPolicy(accts, w.pepper, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, true)
	return &Generation{Config: &config.Config{}, Policy: pol}
}

// peer is the test's end of a session: the client and the backend.
type peer struct {
	client  net.Conn
	cr      *bufio.Reader
	backend net.Conn
	br      *bufio.Reader
}

// start runs a relayed session of user with secret on protocol, admitted
// under rt (the server's runtime when nil).
func (w *regWorld) start(protocol, user, secret string, rt *Generation) *peer {
	t := w.t
	if rt == nil {
		rt = w.srv.Generation()
	}
	ip := netip.MustParseAddr("127.0.0.1")
	d := rt.Policy.Decide(auth.Attempt{User: user, Secret: secret, ClientIP: ip, Protocol: protocol})
	if d.Kind == auth.Refuse {
		t.Fatalf("%s refused: %s", user, d.Reason)
	}
	kc, uc := loopback.Pair(t)
	kb, bc := loopback.Pair(t)
	sess := &session{srv: w.srv, rt: rt, spec: config.Listener{Protocol: protocol}, dialect: dialectOf(protocol), clientIP: ip, admitted: &d, log: w.srv.log}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		sess.relay(w.ctx, w.srv.log, relay.Endpoint{Conn: kc}, relay.Endpoint{Conn: kb})
	}()
	return &peer{client: uc, cr: bufio.NewReader(uc), backend: bc, br: bufio.NewReader(bc)}
}

// roundTrip checks that the session still relays both ways.
func (p *peer) roundTrip(t *testing.T, server, client string) {
	t.Helper()
	_ = p.backend.SetDeadline(time.Now().Add(5 * time.Second))
	_ = p.client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(p.backend, server); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, p.cr, len(server)); got != server {
		t.Fatalf("client got %q, want %q", got, server)
	}
	if _, err := io.WriteString(p.client, client); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, p.br, len(client)); got != client {
		t.Fatalf("backend got %q, want %q", got, client)
	}
}

func readN(t *testing.T, r *bufio.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf)
}

// rest reads what the client gets until the connection ends, which must
// be within a second.
func (p *peer) rest(t *testing.T) string {
	t.Helper()
	start := time.Now()
	_ = p.client.SetReadDeadline(start.Add(3 * time.Second))
	data, err := io.ReadAll(p.cr)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
		t.Fatalf("reading to the end: %v (got %q)", err, data)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the session was closed only after %v", d)
	}
	return string(data)
}

func isConnReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

func waitSessions(t *testing.T, srv *Server, n int) []SessionInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		list := srv.Sessions()
		if len(list) == n {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions registered, want %d: %+v", len(list), n, list)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRegistryListsAndCounts(t *testing.T) {
	w := newRegWorld(t)
	a := w.start("imap", "alice", w.codes["A"], nil)
	c := w.start("pop3", "carol", "carol-pw", nil)
	list := waitSessions(t, w.srv, 2)
	byUser := map[string]SessionInfo{}
	for _, s := range list {
		byUser[s.User] = s
	}
	if s := byUser["alice"]; s.Method != "passcode" || s.App != "A" || s.Protocol != "imap" || s.ClientIP.String() != "127.0.0.1" || s.Since.IsZero() {
		t.Errorf("alice: %+v", s)
	}
	if s := byUser["carol"]; s.Method != "passthrough" || s.App != "" || s.Protocol != "pop3" {
		t.Errorf("carol: %+v", s)
	}
	a.roundTrip(t, "* OK hello\r\n", "a1 NOOP\r\n")
	c.roundTrip(t, "+OK 2 messages\r\n", "STAT\r\n")
	// A copier counts a chunk once its write returned, which may be just
	// after the peer read it.
	want := map[string][2]int64{"alice": {9, 12}, "carol": {6, 16}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var wrong []SessionInfo
		for _, s := range w.srv.Sessions() {
			if w := want[s.User]; s.BytesIn != w[0] || s.BytesOut != w[1] {
				wrong = append(wrong, s)
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bytes in/out wrong (want %v): %+v", want, wrong)
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.client.Close()
	a.backend.Close()
	waitSessions(t, w.srv, 1)
	c.backend.Close()
	c.client.Close()
	waitSessions(t, w.srv, 0)
}

func TestRegistryRevokesOnSwap(t *testing.T) {
	w := newRegWorld(t)
	a := w.start("imap", "alice", w.codes["A"], nil)
	b := w.start("imap", "alice", w.codes["B"], nil)
	c := w.start("pop3", "carol", "carol-pw", nil)
	waitSessions(t, w.srv, 3)
	a.roundTrip(t, "+ idling\r\n", "")

	// Passcode A revoked: only its session goes, with a BYE.
	if n := w.srv.Swap(w.runtime([]string{"B", "D"}, nil)); n != 1 {
		t.Fatalf("Swap closes %d sessions, want 1", n)
	}
	if got := a.rest(t); got != imapRevokedBye() {
		t.Errorf("revoked IMAP client got %q, want the BYE", got)
	}
	b.roundTrip(t, "* 4 EXISTS\r\n", "DONE\r\n")
	c.roundTrip(t, "+OK\r\n", "NOOP\r\n")
	waitSessions(t, w.srv, 2)

	// 2FA turned on for carol: her password session goes, without a line
	// (POP3).
	if n := w.srv.Swap(w.runtime([]string{"B", "D"}, []string{"carol"})); n != 1 {
		t.Fatalf("Swap closes %d sessions, want 1", n)
	}
	if got := c.rest(t); got != "" {
		t.Errorf("revoked POP3 client got %q, want nothing", got)
	}
	b.roundTrip(t, "* 5 EXISTS\r\n", "a5 NOOP\r\n")

	// 2FA reset for alice (2fa disable): her passcode sessions go.
	if n := w.srv.Swap(w.runtime(nil, []string{"carol"})); n != 1 {
		t.Fatalf("Swap closes %d sessions, want 1", n)
	}
	if got := testutil.ToFloat64(w.m.RevokedCounter()); got != 3 {
		t.Errorf("kanmon_sessions_revoked_total = %v after 3 revocations, want 3", got)
	}
	if got := b.rest(t); got != imapRevokedBye() {
		t.Errorf("client after 2FA reset got %q, want the BYE", got)
	}
	waitSessions(t, w.srv, 0)
}

func TestRegistryNoByeMidResponse(t *testing.T) {
	w := newRegWorld(t)
	for _, partial := range []string{
		"* 1 FETCH (BODY[] {100}\r\nSubject: x\r\n", // inside a literal
		"* 1 FETCH (FLAGS (\\Seen)",                 // inside a line
	} {
		d := w.start("imap", "alice", w.codes["D"], nil)
		waitSessions(t, w.srv, 1)
		d.roundTrip(t, partial, "")
		w.srv.Swap(w.runtime([]string{"A", "B"}, nil))
		if got := d.rest(t); got != "" {
			t.Errorf("after %q the client got %q, want nothing but the close", partial, got)
		}
		waitSessions(t, w.srv, 0)
		w.srv.Swap(w.runtime([]string{"A", "B", "D"}, nil))
	}
}

// A client that reads nothing while the backend sends a lot: the
// copier's write is stuck, and the revocation must not wait for it.
func TestRegistryRevokesStuckSession(t *testing.T) {
	w := newRegWorld(t)
	d := w.start("imap", "alice", w.codes["D"], nil)
	waitSessions(t, w.srv, 1)
	go func() {
		chunk := []byte("* OK " + strings.Repeat("x", 1<<16) + "\r\n")
		for {
			if _, err := d.backend.Write(chunk); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the socket buffers fill
	start := time.Now()
	w.srv.Swap(w.runtime([]string{"A", "B"}, nil))
	waitSessions(t, w.srv, 0)
	if el := time.Since(start); el > time.Second {
		t.Fatalf("stuck session closed after %v", el)
	}
}

// A session admitted under an older runtime, whose relay starts after a
// reload that revoked its passcode, is closed at once.
func TestRegistryLateRegistration(t *testing.T) {
	w := newRegWorld(t)
	old := w.srv.Generation()
	w.srv.Swap(w.runtime([]string{"B", "D"}, nil))
	a := w.start("imap", "alice", w.codes["A"], old)
	if got := a.rest(t); got != imapRevokedBye() {
		t.Errorf("late session got %q, want the BYE", got)
	}
	b := w.start("imap", "alice", w.codes["B"], old)
	waitSessions(t, w.srv, 1)
	b.roundTrip(t, "* OK\r\n", "a1 NOOP\r\n")
}

// imapRevokedBye is the goodbye of a revoked IMAP session.
func imapRevokedBye() string { return dialectOf(config.ProtocolIMAP).revokedBye }
