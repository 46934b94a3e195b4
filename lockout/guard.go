// Package lockout stops failed-login storms without locking out the real
// user. A Guard sits between auth.Decide and the backend login:
//
//	v := guard.Check(user, ip, secret)      // before any backend contact
//	switch {
//	case v.Outcome == lockout.Unavailable:  // answer with a temporary error
//	case !v.Allowed():                      // answer "failed" after the tarpit delay
//	default:                                // decide, ask the backend, then:
//		guard.Failure(user, ip, secret)      // on a definite authentication failure only
//		guard.Success(user, ip)              // on success
//	}
//
// What it does:
//
//   - Stale secrets count once. A definite failure remembers a keyed
//     fingerprint of the secret for the account; the same wrong secret
//     again is refused by Check without asking the backend (Stale), and a
//     Failure with a known fingerprint counts nothing. Once per
//     RecheckInterval a known wrong secret is let through (Recheck) in case
//     the backend's password changed. Fingerprints expire, are dropped on
//     success and by ResetAccount when the account's 2FA state changes.
//   - Brute force and spraying are stopped by windowed counters per
//     (account, IP), account, IP and IP prefix, locks with a doubling
//     backoff, and a cap of MaxAccountFailures failures since the last
//     success. See Options.
//   - An attacker can't lock the real user out: the account, IP and prefix
//     locks don't apply to an IP that logged into that account within
//     KnownGoodTTL. Only the (account, IP) lock applies to it.
//   - State lives in bbolt, written in batches of at most BatchDelay, and
//     is loaded by Open, so locks survive a restart or a crash. If the
//     database fails, Check fails closed (Unavailable) until a write
//     succeeds again. Memory is bounded by MaxEntries per table.
//
// A Guard is safe for concurrent use. The package keeps no global state.
package lockout

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrClosed is the Unavailable cause after Close.
var ErrClosed = errors.New("lockout: guard is closed")

// Scope is what a counter or lock is about.
type Scope uint8

// Scopes, in the order Check tests their locks.
const (
	ScopeNone      Scope = iota
	ScopeAccountIP       // one account from one client IP
	ScopeAccount         // one account from any IP
	ScopeIP              // one client IP on any account
	ScopePrefix          // one IP prefix (/24, /64) on any account
	numScopes
)

// String returns "account+ip", "account", "ip", "prefix" or "none".
func (s Scope) String() string {
	switch s {
	case ScopeNone:
		return "none"
	case ScopeAccountIP:
		return "account+ip"
	case ScopeAccount:
		return "account"
	case ScopeIP:
		return "ip"
	case ScopePrefix:
		return "prefix"
	}
	return "Scope(" + strconv.Itoa(int(s)) + ")"
}

// Outcome is what Check says about an attempt.
type Outcome uint8

const (
	// Allow: go on to the policy and the backend.
	Allow Outcome = iota
	// Locked: refuse without backend contact; Verdict.Scope says which
	// lock. Reply exactly as to a wrong secret, after the same delay.
	Locked
	// Stale: this wrong secret was definitely rejected for this account
	// within FingerprintTTL and is not due for a recheck. Refuse without
	// backend contact and without calling Failure (it was counted once).
	Stale
	// Unavailable: the lockout state can't be trusted (database error,
	// or the Guard is closed). Answer with a temporary error.
	Unavailable
)

// Verdict is Check's answer.
type Verdict struct {
	// Outcome is the answer.
	Outcome Outcome
	// Scope is the lock's scope when Outcome is Locked.
	Scope Scope
	// Until is when the lock ends, when Outcome is Locked. For the log
	// only: telling the client would be an oracle.
	Until time.Time
	// Recheck is set with Allow when the secret is a remembered wrong one
	// that is due to be checked with the backend once more.
	Recheck bool
	// Err is the cause when Outcome is Unavailable.
	Err error
}

// Allowed reports whether the attempt may go on to the backend.
func (v Verdict) Allowed() bool { return v.Outcome == Allow }

// String returns a stable reason for logs: "allowed", "allowed: recheck
// stale secret", "locked: account+ip", "locked: account", "locked: ip",
// "locked: prefix", "repeated stale secret" or "lockout unavailable".
func (v Verdict) String() string {
	switch v.Outcome {
	case Allow:
		if v.Recheck {
			return "allowed: recheck stale secret"
		}
		return "allowed"
	case Locked:
		return "locked: " + v.Scope.String()
	case Stale:
		return "repeated stale secret"
	case Unavailable:
		return "lockout unavailable"
	}
	return "Outcome(" + strconv.Itoa(int(v.Outcome)) + ")"
}

// FailureInfo describes a recorded failure, for the log line.
type FailureInfo struct {
	// Counted is false when the secret was already remembered as wrong
	// for the account (a stale client repeating itself): nothing was
	// counted, the fingerprint was only refreshed.
	Counted bool
	// AccountIP, Account, IP and Prefix are the failures within each
	// scope's window, this one included.
	AccountIP, Account, IP, Prefix int
	// Consecutive is the account's counted failures since its last
	// success (the MaxAccountFailures count).
	Consecutive int
	// Locked is the first scope (in Scope order) whose lock this failure
	// started, or ScopeNone.
	Locked Scope
	// Until is when that lock ends.
	Until time.Time
}

// LogValue groups the counts for log/slog:
// counted=true account_ip=3 account=5 ip=3 prefix=4 consecutive=5 [locked=account+ip until=...].
func (f FailureInfo) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.Bool("counted", f.Counted),
		slog.Int("account_ip", f.AccountIP),
		slog.Int("account", f.Account),
		slog.Int("ip", f.IP),
		slog.Int("prefix", f.Prefix),
		slog.Int("consecutive", f.Consecutive),
	}
	if f.Locked != ScopeNone {
		attrs = append(attrs, slog.String("locked", f.Locked.String()), slog.Time("until", f.Until))
	}
	return slog.GroupValue(attrs...)
}

// Guard enforces the lockout rules. Create it with Open.
type Guard struct {
	opts   Options
	secret []byte
	db     *bolt.DB

	mu       sync.Mutex
	counters [numScopes]map[string]*counter // [ScopeNone] unused
	fps      map[string]fpSet               // by user
	good     map[string]int64               // by user NUL ip: last success
	goodIP   map[netip.Addr]int64           // by ip: last success on any account (from good)
	dirty    map[string]struct{}            // bucket byte + key in bucket
	storeErr error                          // last write's error; Check fails closed while set
	closed   bool

	// exempt are the networks (the campus) whose addresses the IP and
	// prefix scopes neither count nor lock; see SetExempt.
	exempt atomic.Pointer[[]netip.Prefix]
	// divisor divides the thresholds; see SetDivisor. 0 or 1: undivided.
	divisor atomic.Int32

	kick chan struct{} // a change waits to be written
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the writer has stopped
}

// attempt is what Failure works out before taking the lock: the time in
// nanoseconds, the attempt's keys, and the secret's fingerprint (zero for
// an empty secret). Check takes the fingerprint only when the account has
// wrong secrets remembered.
func (g *Guard) attempt(user string, ip netip.Addr, secret string) (n int64, k keys, sum [fpLen]byte) {
	k = g.keysFor(user, ip)
	if secret != "" {
		sum = g.fingerprint(k.user, secret)
	}
	return nanos(g.opts.Now()), k, sum
}

// Check decides, before any backend contact, whether an attempt may go on.
// It counts nothing. When it allows a remembered wrong secret through for
// its recheck (Verdict.Recheck), the next recheck of that secret is due
// RecheckInterval later, so concurrent clients don't all reach the backend.
func (g *Guard) Check(user string, ip netip.Addr, secret string) Verdict {
	n := nanos(g.opts.Now())
	k := g.keysFor(user, ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return Verdict{Outcome: Unavailable, Err: ErrClosed}
	case g.storeErr != nil:
		return Verdict{Outcome: Unavailable, Err: g.storeErr}
	}
	good := g.knownGood(&k, n)
	for s := ScopeAccountIP; s < numScopes; s++ {
		if s != ScopeAccountIP && good {
			break
		}
		if c := g.counters[s][k.scopeKey(s)]; c != nil && c.locked(n) {
			return Verdict{Outcome: Locked, Scope: s, Until: time.Unix(0, c.until)}
		}
	}
	if secret == "" {
		return Verdict{Outcome: Allow}
	}
	set := g.fps[k.user]
	if len(set) == 0 {
		return Verdict{Outcome: Allow} // no wrong secret remembered: no fingerprint to take
	}
	i := set.find(g.fingerprint(k.user, secret), n, int64(g.opts.FingerprintTTL))
	if i < 0 {
		return Verdict{Outcome: Allow}
	}
	if n < set[i].checked+int64(g.opts.RecheckInterval) {
		return Verdict{Outcome: Stale}
	}
	set[i].checked = n
	g.markDirty(bucketFingerprints, k.user)
	return Verdict{Outcome: Allow, Recheck: true}
}

// FailureAddress records a failure that names no account kanmon would
// ask about (a user name [users] refuses): it counts in the IP and prefix
// scopes only, so that a spray of junk names locks its source like any
// other spray.
func (g *Guard) FailureAddress(ip netip.Addr) FailureInfo {
	return g.Failure("", ip, "")
}

// Failure records a definite authentication failure: a wrong passcode, a
// non-passcode secret on a 2FA account, the backend's definite
// authentication failure. Never call it for a timeout, an unavailable
// backend, the backend's own temporary lock, or a refusal by Check. It
// remembers the secret's fingerprint and counts the failure in every
// scope, possibly starting locks; if the fingerprint was already
// remembered for the account, it only refreshes it and counts nothing.
func (g *Guard) Failure(user string, ip netip.Addr, secret string) FailureInfo {
	n, k, sum := g.attempt(user, ip, secret)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return FailureInfo{}
	}
	defer g.kickWriter()
	info := FailureInfo{Counted: true}
	if secret != "" {
		ttl := int64(g.opts.FingerprintTTL)
		set := g.fps[k.user].prune(n, ttl)
		if i := set.find(sum, n, ttl); i >= 0 {
			set[i].confirmed, set[i].checked = n, n
			info.Counted = false
		} else {
			if set == nil && len(g.fps) >= g.opts.MaxEntries {
				v := evictOne(g.fps, func(s fpSet) bool { return len(s.prune(n, ttl)) == 0 }, fpSet.lastUse)
				g.markDirty(bucketFingerprints, v)
			}
			set = set.add(fingerprint{sum: sum, confirmed: n, checked: n}, g.opts.Fingerprints)
		}
		g.fps[k.user] = set
		g.markDirty(bucketFingerprints, k.user)
	}
	counts := [numScopes]*int{nil, &info.AccountIP, &info.Account, &info.IP, &info.Prefix}
	for s := ScopeAccountIP; s < numScopes; s++ {
		key := k.scopeKey(s)
		if key == "" {
			continue
		}
		thr, w := g.threshold(s)
		c := g.counterFor(s, key, n, info.Counted)
		if c == nil {
			continue
		}
		if !info.Counted {
			*counts[s] = c.estimate(n, w)
			if s == ScopeAccount {
				info.Consecutive = int(c.consec)
			}
			continue
		}
		c.roll(n, w)
		c.cur++
		*counts[s] = c.estimate(n, w)
		trip := *counts[s] >= thr
		if s == ScopeAccount {
			if c.consec > 0 && n >= c.last+int64(g.opts.FailureMemory) {
				c.consec = 0
			}
			c.consec++
			info.Consecutive = int(c.consec)
			trip = trip || info.Consecutive >= g.divided(g.opts.MaxAccountFailures)
		}
		c.last = n
		if trip && !c.locked(n) {
			c.trip(n, &g.opts)
			if info.Locked == ScopeNone {
				info.Locked, info.Until = s, time.Unix(0, c.until)
			}
		}
		g.markDirty(bucketCounters, counterKey(s, key))
	}
	return info
}

// Success records a successful login: it forgets the account's remembered
// wrong secrets, clears the (account, ip) counter and lock, resets the
// account's failures-since-success count, and makes ip known-good for the
// account for KnownGoodTTL. The account's windowed counter and lock stay:
// they keep protecting the account from other IPs.
func (g *Guard) Success(user string, ip netip.Addr) {
	n := nanos(g.opts.Now())
	k := g.keysFor(user, ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	defer g.kickWriter()
	if _, ok := g.fps[k.user]; ok {
		delete(g.fps, k.user)
		g.markDirty(bucketFingerprints, k.user)
	}
	if _, ok := g.counters[ScopeAccountIP][k.accountIP]; ok {
		delete(g.counters[ScopeAccountIP], k.accountIP)
		g.markDirty(bucketCounters, counterKey(ScopeAccountIP, k.accountIP))
	}
	if c := g.counters[ScopeAccount][k.user]; c != nil && c.consec != 0 {
		c.consec = 0
		g.markDirty(bucketCounters, counterKey(ScopeAccount, k.user))
	}
	last, ok := g.good[k.accountIP]
	if ok && n-last < int64(g.opts.KnownGoodTTL)/knownGoodRefreshShare {
		return // known-good already, and recently written: no database write
	}
	if !ok && len(g.good) >= g.opts.MaxEntries {
		ttl := int64(g.opts.KnownGoodTTL)
		v := evictOne(g.good, func(t int64) bool { return n >= t+ttl }, func(t int64) int64 { return t })
		g.markDirty(bucketKnownGood, v)
	}
	g.good[k.accountIP] = n
	g.markDirty(bucketKnownGood, k.accountIP)
	g.noteGoodIP(k.ip, n)
}

// knownGoodRefreshShare spaces the writes of a known-good time: a success
// within KnownGoodTTL/knownGoodRefreshShare of the last one written (an
// hour, for 30 days) changes nothing, so that a client logging in all day
// costs no database write per login; the address then stays known-good
// at most that much less long.
const knownGoodRefreshShare = 720

// noteGoodIP records a success from ip at n in the address-level index,
// evicting the oldest entry when it is full. Callers hold g.mu.
func (g *Guard) noteGoodIP(ip netip.Addr, n int64) {
	if !ip.IsValid() {
		return
	}
	if _, ok := g.goodIP[ip]; !ok && len(g.goodIP) >= g.opts.MaxEntries {
		ttl := int64(g.opts.KnownGoodTTL)
		evictOne(g.goodIP, func(t int64) bool { return n >= t+ttl }, func(t int64) int64 { return t })
	}
	if n > g.goodIP[ip] {
		g.goodIP[ip] = n
	}
}

// KnownGoodIP reports whether some account logged in from ip within
// KnownGoodTTL: the address has a real user behind it. The connection
// reserve admits such addresses when unknown ones have filled the rest.
func (g *Guard) KnownGoodIP(ip netip.Addr) bool {
	n := nanos(g.opts.Now())
	ip = normIP(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.goodIP[ip]
	return ok && n < t+int64(g.opts.KnownGoodTTL)
}

// SetExempt sets the networks whose addresses the IP and prefix scopes
// neither count nor lock: the campus (trusted_networks), where one NAT
// address or prefix stands for many users, so that one bad client there
// cannot lock out everyone behind it. The account and account+IP scopes
// still apply. A reload calls it again with the new networks.
func (g *Guard) SetExempt(prefixes []netip.Prefix) {
	p := make([]netip.Prefix, 0, len(prefixes))
	for _, pr := range prefixes {
		if a := pr.Addr(); a.Is4In6() && pr.Bits() >= 96 {
			pr = netip.PrefixFrom(a.Unmap(), pr.Bits()-96)
		}
		p = append(p, pr.Masked())
	}
	g.exempt.Store(&p)
}

// exempted reports whether ip is in the networks of SetExempt.
func (g *Guard) exempted(ip netip.Addr) bool {
	p := g.exempt.Load()
	if p == nil || !ip.IsValid() {
		return false
	}
	for _, pr := range *p {
		if pr.Contains(ip) {
			return true
		}
	}
	return false
}

// ResetAccount forgets the account's remembered wrong secrets. Call it when
// the account's 2FA state changes: the password that was wrong while 2FA
// was on is the right one after "2fa disable".
func (g *Guard) ResetAccount(user string) {
	u := normUser(user)
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.fps[u]; ok && !g.closed {
		delete(g.fps, u)
		g.markDirty(bucketFingerprints, u)
		g.kickWriter()
	}
}

// Delay returns the tarpit delay before answering the n-th failed login on
// a connection (n counts from 1): Tarpit, doubled for each further
// failure, capped at TarpitMax; 0 if n < 1. Apply it to every failure,
// locked and stale ones included, so that a lock can't be told from a
// wrong secret; wait with a timer (time.NewTimer in the connection's
// goroutine), measured from the start of the attempt so the backend's own
// failure delay is absorbed rather than added.
func (g *Guard) Delay(n int) time.Duration {
	if n < 1 {
		return 0
	}
	d := g.opts.Tarpit
	for i := 1; i < n && d < g.opts.TarpitMax; i++ {
		d *= 2
	}
	return min(d, g.opts.TarpitMax)
}

// Options returns the options in effect, defaults filled in.
func (g *Guard) Options() Options { return g.opts }

// fingerprint returns the keyed fingerprint of secret for user:
// HMAC-SHA256(key, user NUL secret), truncated to fpLen bytes.
func (g *Guard) fingerprint(user, secret string) [fpLen]byte {
	m := hmac.New(sha256.New, g.secret)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(secret))
	var out [fpLen]byte
	copy(out[:], m.Sum(nil))
	return out
}

// Close writes pending changes and closes the database. Check returns
// Unavailable afterwards; Failure, Success and ResetAccount do nothing.
func (g *Guard) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	close(g.stop)
	<-g.done
	err := g.flush()
	if cerr := g.db.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("lockout: closing %s: %w", g.db.Path(), cerr))
	}
	return err
}
