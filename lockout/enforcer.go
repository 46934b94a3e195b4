package lockout

import (
	"net/netip"
	"strings"
	"time"
)

// Enforcer is what the proxy, the portal and the admin socket use of the
// lockout: a Guard on one node, or a Guard shared by several nodes
// through Redis (package redisstate). Both keep the rules of this
// package's documentation.
type Enforcer interface {
	// Check decides, before any backend contact, whether an attempt may
	// go on; see Guard.Check.
	Check(user string, ip netip.Addr, secret string) Verdict
	// Failure records a definite authentication failure; see
	// Guard.Failure.
	Failure(user string, ip netip.Addr, secret string) FailureInfo
	// FailureAddress records a failure that names no account; see
	// Guard.FailureAddress.
	FailureAddress(ip netip.Addr) FailureInfo
	// Success records a successful login; see Guard.Success.
	Success(user string, ip netip.Addr)
	// KnownGoodIP reports whether some account logged in from ip within
	// KnownGoodTTL.
	KnownGoodIP(ip netip.Addr) bool
	// SetExempt sets the networks the IP and prefix scopes skip.
	SetExempt(prefixes []netip.Prefix)
	// ResetAccount forgets the account's remembered wrong secrets.
	ResetAccount(user string)
	// Delay is the tarpit delay before the n-th failure's answer.
	Delay(n int) time.Duration
	// List returns the locks in force.
	List() []Entry
	// Clear removes counters and locks; see Guard.Clear.
	Clear(target string) int
	// LockCounts returns the locks in force per scope name.
	LockCounts() map[string]int
}

var _ Enforcer = (*Guard)(nil)

// Keys are the subjects of one attempt in each scope, as the Guard names
// them: its map keys, and a shared store's key suffixes.
type Keys struct{ k keys }

// Keys returns the keys of user and ip, exemptions applied: an address
// of SetExempt has no IP or prefix key.
func (g *Guard) Keys(user string, ip netip.Addr) Keys { return Keys{g.keysFor(user, ip)} }

// User is the normalized (case-folded) account, "" for FailureAddress.
func (k Keys) User() string { return k.k.user }

// IP is the normalized client address.
func (k Keys) IP() netip.Addr { return k.k.ip }

// AccountIP is the (account, IP) subject: user NUL ip.
func (k Keys) AccountIP() string { return k.k.accountIP }

// Scope returns the subject of scope s, "" when the scope does not apply
// (no account, or an exempt address).
func (k Keys) Scope(s Scope) string { return k.k.scopeKey(s) }

// Fingerprint returns the keyed fingerprint of secret for the
// normalized user: HMAC-SHA256 with the Guard's key, truncated to 128
// bits. It never reveals the secret.
func (g *Guard) Fingerprint(user, secret string) [16]byte { return g.fingerprint(user, secret) }

// Threshold returns scope s's failure threshold, divided as SetDivisor
// says, and its window.
func (g *Guard) Threshold(s Scope) (int, time.Duration) {
	thr, w := g.threshold(s)
	return thr, time.Duration(w)
}

// SetDivisor divides every threshold (and MaxAccountFailures) by n,
// rounding up, from now on; 1 restores them. A node that can't reach
// the shared store enforces on its own counters with n = the nodes alive,
// so that N nodes together allow no more than one would.
func (g *Guard) SetDivisor(n int) {
	g.divisor.Store(int32(max(n, 1)))
}

// divided returns thr divided by the divisor, rounded up, at least 1.
func (g *Guard) divided(thr int) int {
	d := int(g.divisor.Load())
	if d <= 1 {
		return thr
	}
	return max((thr+d-1)/d, 1)
}

// ClearMatcher returns what Clear(target) removes, for stores that keep
// the counters elsewhere: inScope reports whether a counter of scope s
// with subject key (as Keys.Scope names it) goes, and user is the
// normalized account whose remembered wrong secrets go ("" when target
// is an address or prefix).
func ClearMatcher(target string) (inScope func(s Scope, key string) bool, user string) {
	if ip, err := netip.ParseAddr(target); err == nil {
		ipKey := normIP(ip).String()
		return func(s Scope, key string) bool {
			switch s {
			case ScopeIP:
				return key == ipKey
			case ScopeAccountIP:
				return strings.HasSuffix(key, "\x00"+ipKey)
			}
			return false
		}, ""
	}
	if p, err := netip.ParsePrefix(target); err == nil {
		p = p.Masked()
		return func(s Scope, key string) bool {
			switch s {
			case ScopePrefix:
				q, err := netip.ParsePrefix(key)
				return err == nil && q == p
			case ScopeIP:
				ip, err := netip.ParseAddr(key)
				return err == nil && p.Contains(ip)
			case ScopeAccountIP:
				_, ipKey, _ := strings.Cut(key, "\x00")
				ip, err := netip.ParseAddr(ipKey)
				return err == nil && p.Contains(ip)
			}
			return false
		}, ""
	}
	user = normUser(target)
	return func(s Scope, key string) bool {
		switch s {
		case ScopeAccount:
			return key == user
		case ScopeAccountIP:
			return strings.HasPrefix(key, user+"\x00")
		}
		return false
	}, user
}

// KnownGood reports whether ip logged into user within KnownGoodTTL, as
// far as this Guard has seen.
func (g *Guard) KnownGood(user string, ip netip.Addr) bool {
	k := g.keysFor(user, ip)
	n := nanos(g.opts.Now())
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.knownGood(&k, n)
}
