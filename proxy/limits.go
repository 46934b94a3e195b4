package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/userkey"
)

// The caps (config max_connections, max_preauth_per_ip,
// max_sessions_per_user_ip) and the replies a client gets when one is hit.
// The connection caps are checked when a connection is accepted, before
// the greeting, which the dialect's tooManyConns replaces; the session cap
// when a login has succeeded, before the client is told so. Each connection reads the
// caps of the configuration in force, so a reload changes them for the
// connections and logins that follow.

// Names of the caps, as their config keys: the "limit" label of
// kanmon_limit_refusals_total and the log's "limit" attribute.
const (
	limitConnections      = "max_connections"
	limitReserved         = "reserved_connections"
	limitPreAuthPerIP     = "max_preauth_per_ip"
	limitPreAuthPerPrefix = "max_preauth_per_prefix"
	limitSessionUserIP    = "max_sessions_per_user_ip"
)

// refusalTimeout bounds the TLS handshake and the write of a refusal.
const refusalTimeout = 2 * time.Second

// limits counts what the caps count. The zero value is empty and ready.
type limits struct {
	mu sync.Mutex
	// total is the number of open client connections.
	total int
	// preAuth counts, by client address, the connections that have not
	// logged in yet; preAuthPrefix by network prefix, outside
	// trusted_networks; preAuthTotal all of them.
	preAuth       map[netip.Addr]int
	preAuthPrefix map[netip.Prefix]int
	preAuthTotal  int
	// userIP counts the logged-in sessions by protocol, user and address.
	userIP map[userIPKey]int
	// stress is the stress mode (siege.go).
	stress stressMode
}

// userIPKey is what max_sessions_per_user_ip counts by.
type userIPKey struct {
	protocol, user string // user case-folded (userkey.Fold)
	ip             netip.Addr
}

// capHold is what one connection holds of the caps. Only its session's
// goroutine changes it, under limits.mu.
type capHold struct {
	ip      netip.Addr   // the address its pre-auth slot is counted under
	prefix  netip.Prefix // the prefix it is counted under too; invalid on the campus
	preAuth bool         // it still holds its pre-auth slot
	userIP  *userIPKey   // the session slot it holds, if any
}

// admit counts a new connection from ip against the connection caps of
// cfg. trusted says ip is inside trusted_networks, which no prefix cap
// counts; privileged, asked only when the unreserved connections are all
// taken, says ip may use the reserve (campus or known-good). It returns
// the connection's hold, or the name of the cap that refuses it.
func (l *limits) admit(cfg *config.Config, ip netip.Addr, trusted bool, privileged func() bool) (*capHold, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= cfg.MaxConnections {
		return nil, limitConnections
	}
	reserved := 0
	if cfg.ReservedConnections != nil {
		reserved = *cfg.ReservedConnections
	}
	if l.total >= cfg.MaxConnections-reserved && !privileged() {
		return nil, limitReserved
	}
	if l.preAuth[ip] >= cfg.MaxPreAuthPerIP {
		return nil, limitPreAuthPerIP
	}
	var prefix netip.Prefix
	if !trusted {
		prefix = preAuthPrefix(cfg, ip)
		if prefix.IsValid() && l.preAuthPrefix[prefix] >= cfg.MaxPreAuthPerPrefix {
			return nil, limitPreAuthPerPrefix
		}
	}
	if l.preAuth == nil {
		l.preAuth, l.preAuthPrefix = map[netip.Addr]int{}, map[netip.Prefix]int{}
	}
	l.total++
	l.preAuth[ip]++
	if prefix.IsValid() {
		l.preAuthPrefix[prefix]++
	}
	l.preAuthTotal++
	l.stress.check(cfg, l.preAuthTotal)
	return &capHold{ip: ip, prefix: prefix, preAuth: true}, ""
}

// endPreAuth gives back h's pre-auth slot: the connection has logged in.
func (l *limits) endPreAuth(h *capHold) {
	if h == nil || !h.preAuth {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropPreAuth(h)
}

// release gives back everything h holds: the connection has ended.
func (l *limits) release(h *capHold) {
	if h == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	l.dropPreAuth(h)
	if h.userIP != nil {
		if l.userIP[*h.userIP]--; l.userIP[*h.userIP] <= 0 {
			delete(l.userIP, *h.userIP)
		}
		h.userIP = nil
	}
}

// dropPreAuth gives back h's pre-auth slot; l.mu is held.
func (l *limits) dropPreAuth(h *capHold) {
	if !h.preAuth {
		return
	}
	h.preAuth = false
	if l.preAuth[h.ip]--; l.preAuth[h.ip] <= 0 {
		delete(l.preAuth, h.ip)
	}
	if h.prefix.IsValid() {
		if l.preAuthPrefix[h.prefix]--; l.preAuthPrefix[h.prefix] <= 0 {
			delete(l.preAuthPrefix, h.prefix)
		}
	}
	l.preAuthTotal--
	l.stress.check(nil, l.preAuthTotal)
}

// connections is the number of open client connections.
func (l *limits) connections() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// admitSession takes, for the session's lifetime, one of the
// max_sessions_per_user_ip slots of the user that authenticate has just
// admitted and of the client address. When none is left it logs the
// refusal, counts it and returns false: the front must then close the
// backend connection and answer with its dialect's sessionLimit instead
// of its OK, and the client stays unauthenticated. Call it after authenticate
// returned outcomeOK and before answering the client.
func (s *session) admitSession() bool {
	if s.admitted == nil || s.hold == nil {
		return true
	}
	key := userIPKey{protocol: s.spec.Protocol, user: userkey.Fold(s.admitted.User), ip: s.clientIP}
	most := s.rt.Config.MaxSessionsPerUserIP
	l := &s.srv.limits
	l.mu.Lock()
	ok := l.userIP[key] < most
	if ok {
		if l.userIP == nil {
			l.userIP = map[userIPKey]int{}
		}
		l.userIP[key]++
		s.hold.userIP = &key
	}
	l.mu.Unlock()
	if ok {
		// Logged in: the pre-auth slot is free before the client hears
		// its OK, so a client that reconnects at once finds it free.
		l.endPreAuth(s.hold)
	}
	if !ok {
		s.log.Warn("login refused: too many sessions for this user from this address",
			"user", s.admitted.User, "limit", limitSessionUserIP, "max", most)
		s.srv.metrics.Refused(s.spec.Protocol, limitSessionUserIP)
		s.admitted = nil
	}
	return ok
}

// refuseConn tells a client that a connection cap (limit) refused it and
// closes nothing itself: handle does. On an implicit-TLS listener the
// reply needs a TLS handshake first; both are bounded by refusalTimeout.
func (s *Server) refuseConn(ctx context.Context, conn net.Conn, spec config.Listener, rt *Generation, d *dialect, log *slog.Logger, limit string) {
	if ok, thinned := s.refusals.note(time.Now(), limit); ok {
		attrs := []any{"limit", limit}
		if thinned > 0 {
			attrs = append(attrs, "refused_unlogged", thinned)
		}
		log.Warn("connection refused: too many connections", attrs...)
	}
	s.metrics.Refused(spec.Protocol, limit)
	_ = conn.SetDeadline(time.Now().Add(refusalTimeout))
	if spec.TLS == config.TLSImplicit {
		tc := tls.Server(conn, rt.TLS)
		hctx, cancel := context.WithTimeout(ctx, refusalTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return
		}
		conn = tc
	}
	_, _ = conn.Write([]byte(d.tooManyConns))
}
