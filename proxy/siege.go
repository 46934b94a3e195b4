package proxy

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kanmon-mail/kanmon/config"
)

// What keeps a pool of addresses from filling the proxy, beside the caps
// of limits.go: every connection not logged in yet has a total lifetime
// (preauth_lifetime) however often it sends a command, and when such
// connections hold stress_threshold_percent of max_connections, stress
// mode shortens the idle timeout and the lifetime for all of them,
// including those waiting in a read, until they fall back below nine
// tenths of the threshold. Postfix's stress mode is the model.

// stressExitShare is the share of the threshold below which stress mode
// ends, in tenths: a little below the entry, so that it does not flap.
const stressExitShare = 9

// stressMode is the stress state of the limits. Its fields change under
// limits.mu; on is read without it.
type stressMode struct {
	on atomic.Bool
	// threshold is the number of pre-auth connections that starts it,
	// from the configuration of the last admitted connection.
	threshold int
	// starts ends when stress mode next starts: pre-auth sessions that
	// wait in a read then shorten their deadline (watchStress).
	starts context.Context
	start  context.CancelFunc
	// notify is told of each start and end, with the number of pre-auth
	// connections; set once by NewServer.
	notify func(on bool, preAuth int)
}

// check turns stress mode on or off for preAuth pre-auth connections,
// under the threshold of cfg (nil: the last one). limits.mu is held.
func (m *stressMode) check(cfg *config.Config, preAuth int) {
	if cfg != nil {
		m.threshold = max(1, cfg.MaxConnections*cfg.StressThresholdPercent/100)
	}
	if m.threshold == 0 {
		return
	}
	on := m.on.Load()
	switch {
	case !on && preAuth >= m.threshold:
		m.on.Store(true)
		if m.start != nil {
			m.start()
			m.starts, m.start = nil, nil
		}
	case on && preAuth*10 < m.threshold*stressExitShare:
		m.on.Store(false)
	default:
		return
	}
	if m.notify != nil {
		m.notify(!on, preAuth)
	}
}

// stressStarts returns the context that ends when stress mode next starts.
func (l *limits) stressStarts() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stress.starts == nil {
		l.stress.starts, l.stress.start = context.WithCancel(context.Background())
	}
	return l.stress.starts
}

// preAuthCounts returns the connections not logged in yet and whether
// stress mode is on, for the metrics.
func (l *limits) preAuthCounts() (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.preAuthTotal, l.stress.on.Load()
}

// preAuthTimes are the pre-auth idle timeout and total lifetime of cfg in
// force under stressed.
func preAuthTimes(cfg *config.Config, stressed bool) (timeout, lifetime time.Duration) {
	if stressed {
		return cfg.StressPreAuthTimeout.Duration, cfg.StressPreAuthLifetime.Duration
	}
	return cfg.PreAuthTimeout.Duration, cfg.PreAuthLifetime.Duration
}

// preAuthEnd is when the session's next pre-auth exchange must be over,
// from now: the idle timeout, cut short by the lifetime since accept.
func (s *session) preAuthEnd(now time.Time) time.Time {
	timeout, lifetime := preAuthTimes(s.rt.Config, s.srv.limits.stress.on.Load())
	d := now.Add(timeout)
	if end := s.started.Add(lifetime); lifetime > 0 && end.Before(d) {
		d = end
	}
	return d
}

// watchStress arms the session, if it is not armed already, to shorten
// its deadline when stress mode next starts, even while it waits in a
// read. While stress mode is on there is nothing to arm: preAuthDeadline
// uses the stress values.
func (s *session) watchStress() {
	if s.stressWatch != nil {
		if !s.stressFired.Load() {
			return
		}
		s.stressWatch = nil // it fired for an earlier stress: arm again
	}
	if s.srv.limits.stress.on.Load() {
		return
	}
	s.stressFired.Store(false)
	s.stressWatch = context.AfterFunc(s.srv.limits.stressStarts(), func() {
		s.stressFired.Store(true)
		if d := s.preAuthEnd(time.Now()); d.UnixNano() < s.deadline.Load() {
			s.deadline.Store(d.UnixNano())
			_ = s.conn.SetDeadline(d)
		}
	})
}

// stopStressWatch disarms watchStress: the session logged in or ended.
func (s *session) stopStressWatch() {
	if s.stressWatch != nil {
		s.stressWatch()
		s.stressWatch = nil
	}
}

// admitConn counts a new connection from ip against the connection caps;
// see limits.admit. ip may use the reserve when it is inside
// trusted_networks or known-good for some account.
func (s *Server) admitConn(rt *Generation, ip netip.Addr) (*capHold, string) {
	trusted := rt.Policy.Trusted(ip)
	return s.limits.admit(rt.Config, ip, trusted, func() bool {
		return trusted || s.guard != nil && s.guard.KnownGoodIP(ip)
	})
}

// handshakeTimeout bounds an implicit-TLS handshake: the pre-auth idle
// timeout in force.
func (s *Server) handshakeTimeout(cfg *config.Config) time.Duration {
	timeout, _ := preAuthTimes(cfg, s.limits.stress.on.Load())
	return timeout
}

// watchStressLog logs stress mode's start and end and keeps the metric.
func (s *Server) watchStressLog() {
	s.limits.stress.notify = func(on bool, preAuth int) {
		if on {
			s.log.Warn("stress mode on: pre-auth timeouts shortened", "preauth_connections", preAuth)
		} else {
			s.log.Warn("stress mode off", "preauth_connections", preAuth)
		}
	}
}

// preAuthPrefix is the network prefix of ip that max_preauth_per_prefix
// counts by under cfg; invalid for an invalid address.
func preAuthPrefix(cfg *config.Config, ip netip.Addr) netip.Prefix {
	bits := cfg.PreAuthPrefixV6Bits
	if ip.Is4() {
		bits = cfg.PreAuthPrefixV4Bits
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// refusalLogEvery is how often a refused connection of one cap is
// logged under a flood: a siege refuses thousands a second, and one log
// line each would cost more than the refusal.
const refusalLogEvery = time.Second

// refusalLog thins the log lines of refused connections: per cap, one
// line a refusalLogEvery, which tells how many went unlogged before it.
// kanmon_limit_refusals_total counts them all.
type refusalLog struct {
	mu       sync.Mutex
	last     map[string]time.Time
	unlogged map[string]int
}

// note records a refusal by limit at now, and reports whether to log it
// and how many refusals by limit went unlogged since the last line.
func (r *refusalLog) note(now time.Time, limit string) (logIt bool, unlogged int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last, r.unlogged = map[string]time.Time{}, map[string]int{}
	}
	if now.Sub(r.last[limit]) < refusalLogEvery {
		r.unlogged[limit]++
		return false, 0
	}
	unlogged = r.unlogged[limit]
	r.last[limit], r.unlogged[limit] = now, 0
	return true, unlogged
}
