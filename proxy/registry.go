package proxy

import (
	"cmp"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/proxy/relay"
)

// The session registry: every authenticated session that is relaying is
// listed here, from the start of its relay to its end, with the decision
// that admitted it. A reload (Server.Swap) closes, within a second, the
// sessions whose credential no longer stands under the new policy
// (auth.Policy.Stands): a revoked passcode, an account whose 2FA was
// turned on (its password sessions) or reset (its passcode sessions).

// SessionInfo is one live authenticated session, as `kanmon sessions`
// lists it.
type SessionInfo struct {
	// User is the account, as the backend knows it.
	User string
	// Protocol is imap, pop3 or submission.
	Protocol string
	// ClientIP is the client's address.
	ClientIP netip.Addr
	// Method is how the session authenticated: "passcode" or
	// "passthrough".
	Method string
	// App is the passcode's app name (Method "passcode").
	App string
	// Client is the name/version the client gave in IMAP ID, if any.
	Client string
	// Since is when the relay began (just after the login).
	Since time.Time
	// BytesIn counts client→backend bytes, BytesOut backend→client, live.
	BytesIn, BytesOut int64
}

// registry is the set of live sessions. The zero value is empty and ready.
type registry struct {
	mu   sync.Mutex
	live map[*liveSession]struct{}
	// closing is set by CloseSessions: from then on a session is closed
	// as soon as it registers.
	closing bool
	// ended holds the bytes relayed by the sessions that have ended, by
	// protocol: client→backend, backend→client.
	ended map[string]*[2]int64
}

// liveSession is one registry entry.
type liveSession struct {
	decision auth.Decision
	protocol string
	clientIP netip.Addr
	client   string
	since    time.Time
	tap      *relayTap
	// dialect gives the goodbye lines, written where gated.
	dialect *dialect
	log     *slog.Logger
	cancel  context.CancelFunc
	// doomed is set once a revocation of the session, or its close at
	// shutdown, has begun; closedByShutdown tells the two apart.
	doomed           atomic.Bool
	closedByShutdown atomic.Bool
	once             sync.Once
}

// register lists the session whose relay is about to start and returns
// the context to relay under (a revocation cancels it) and the tap to
// hand the relay. A session admitted under a policy that has since been
// replaced, by one under which its credential no longer stands, is
// revoked at once.
func (s *Server) register(ctx context.Context, sess *session, log *slog.Logger, client, backend relay.Endpoint) (context.Context, *liveSession) {
	ctx, cancel := context.WithCancel(ctx)
	ls := &liveSession{
		decision: *sess.admitted,
		protocol: sess.spec.Protocol,
		clientIP: sess.clientIP,
		client:   sess.clientID,
		since:    time.Now(),
		tap:      &relayTap{client: client.Conn, backend: backend.Conn},
		dialect:  sess.dialect,
		log:      log,
		cancel:   cancel,
	}
	ls.tap.gated = sess.dialect.gated
	r := &s.sessions
	r.mu.Lock()
	if r.live == nil {
		r.live = map[*liveSession]struct{}{}
	}
	r.live[ls] = struct{}{}
	closing := r.closing
	r.mu.Unlock()
	if closing && ls.doomed.CompareAndSwap(false, true) {
		ls.shutDown()
		return ctx, ls
	}
	// Swap stores the new runtime before it sweeps the registry, under
	// the registry's lock: a session added after that sweep sees the new
	// runtime here.
	if cur := s.current.Load(); cur != sess.rt && !cur.Policy.Stands(ls.decision, ls.clientIP) {
		ls.doomed.Store(true)
		ls.revoke(revokeReason(cur.Policy, ls.decision))
	}
	return ctx, ls
}

// unregister removes a session whose relay has ended.
func (s *Server) unregister(ls *liveSession) {
	ls.cancel()
	r := &s.sessions
	r.mu.Lock()
	delete(r.live, ls)
	if r.ended == nil {
		r.ended = map[string]*[2]int64{}
	}
	if r.ended[ls.protocol] == nil {
		r.ended[ls.protocol] = new([2]int64)
	}
	r.ended[ls.protocol][0] += ls.tap.bytes.ClientToBackend.Load()
	r.ended[ls.protocol][1] += ls.tap.bytes.BackendToClient.Load()
	r.mu.Unlock()
}

// CloseSessions closes every live session at once, as the end of the
// drain after SIGTERM does: an IMAP client first gets "* BYE Server
// shutting down." where the stream allows it (see relayTap). A session
// that begins relaying afterwards is closed as soon as it does. It
// returns how many sessions it is closing; the relays end in the
// background, and Wait waits for them.
func (s *Server) CloseSessions() int {
	r := &s.sessions
	r.mu.Lock()
	r.closing = true
	var all []*liveSession
	for ls := range r.live {
		if ls.doomed.CompareAndSwap(false, true) {
			all = append(all, ls)
		}
	}
	r.mu.Unlock()
	for _, ls := range all {
		go ls.shutDown()
	}
	return len(all)
}

// Sessions lists the live authenticated sessions, oldest first.
func (s *Server) Sessions() []SessionInfo {
	r := &s.sessions
	r.mu.Lock()
	out := make([]SessionInfo, 0, len(r.live))
	for ls := range r.live {
		out = append(out, ls.info())
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b SessionInfo) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return cmp.Compare(a.User, b.User)
	})
	return out
}

// info is the entry's snapshot.
func (ls *liveSession) info() SessionInfo {
	return SessionInfo{
		User:     ls.decision.User,
		Protocol: ls.protocol,
		ClientIP: ls.clientIP,
		Method:   ls.decision.Kind.String(),
		App:      ls.decision.App,
		Client:   ls.client,
		Since:    ls.since,
		BytesIn:  ls.tap.bytes.ClientToBackend.Load(),
		BytesOut: ls.tap.bytes.BackendToClient.Load(),
	}
}

// revokeStale closes, in the background and all at once, the sessions
// whose credential does not stand under p, and returns how many (not
// counting those an earlier revocation is already closing).
func (s *Server) revokeStale(p *auth.Policy) int {
	r := &s.sessions
	r.mu.Lock()
	var stale []*liveSession
	for ls := range r.live {
		if !p.Stands(ls.decision, ls.clientIP) && ls.doomed.CompareAndSwap(false, true) {
			stale = append(stale, ls)
		}
	}
	r.mu.Unlock()
	for _, ls := range stale {
		go ls.revoke(revokeReason(p, ls.decision))
	}
	return len(stale)
}

// revoke stops the session's relay (see relayTap for the IMAP goodbye)
// and logs why. Only the first call of revoke or shutDown does anything.
func (ls *liveSession) revoke(reason string) {
	ls.end(ls.dialect.revokedBye, "session closed: credential revoked", "reason", reason)
}

// shutDown stops the session's relay because the server is shutting down.
func (ls *liveSession) shutDown() {
	ls.closedByShutdown.Store(true)
	ls.end(ls.dialect.shutdownBye, "session closed: server shutting down")
}

// end stops the relay, with bye for an IMAP client, and logs msg.
func (ls *liveSession) end(bye, msg string, attrs ...any) {
	ls.once.Do(func() {
		sent := ls.tap.stop([]byte(bye))
		ls.cancel()
		ls.log.Info(msg, append(attrs, "bye", sent)...)
	})
}

// revokeReason says, for the log, why d no longer stands under p.
func revokeReason(p *auth.Policy, d auth.Decision) string {
	switch {
	case d.Kind == auth.Passcode && !p.TwoFA(d.User):
		return "2FA was reset (2fa disable): the account's passcodes are gone"
	case d.Kind == auth.Passcode:
		return "app passcode revoked or no longer valid for this protocol"
	case p.TwoFA(d.User):
		return "2FA was turned on: the account password no longer works here"
	}
	return "client address no longer admitted without 2FA (trusted_networks)"
}
