package lockout

import (
	"net/netip"
	"time"

	"github.com/kanmon-mail/kanmon/internal/userkey"
)

// fpLen is the length kept of each HMAC-SHA256 fingerprint: 128 bits make
// an accidental match between two different secrets impossible in practice.
const fpLen = 16

// evictSample is how many entries are looked at to pick one to evict from
// a full table.
const evictSample = 8

// counter is one scope's failure count and lock. Times are Unix
// nanoseconds of the Guard's clock; zero means never.
type counter struct {
	start  int64  // start of the current window bucket (a multiple of the window)
	cur    uint32 // failures in the current bucket
	prev   uint32 // failures in the bucket before it
	until  int64  // end of the current or last lock
	level  uint8  // locks in the current backoff series
	consec uint32 // account scope: counted failures since the last success
	last   int64  // last counted failure or change, for expiry and eviction
}

// roll moves the buckets forward to now.
func (c *counter) roll(now, window int64) {
	bucket := now - now%window
	switch {
	case bucket <= c.start:
		// same bucket, or the clock went back: keep counting here
	case bucket == c.start+window:
		c.prev, c.cur, c.start = c.cur, 0, bucket
	default:
		c.prev, c.cur, c.start = 0, 0, bucket
	}
}

// estimate returns the failures within the sliding window ending at now
// (without changing c): the current bucket plus the share of the previous
// one the window still covers.
func (c *counter) estimate(now, window int64) int {
	cc := *c
	cc.roll(now, window)
	elapsed := max(now-cc.start, 0)
	if elapsed >= window {
		return int(cc.cur)
	}
	return int(cc.cur) + int(int64(cc.prev)*(window-elapsed)/window)
}

// locked reports whether the lock is in force at now.
func (c *counter) locked(now int64) bool { return c.until > now }

// expired reports whether c holds nothing worth keeping at now.
func (c *counter) expired(now, window int64, o *Options) bool {
	return now >= c.start+2*window &&
		now >= c.until+int64(o.LockMemory) &&
		(c.consec == 0 || now >= c.last+int64(o.FailureMemory))
}

// trip starts a lock at now: LockMin, doubled for each earlier lock whose
// end is less than LockMemory ago, capped at LockMax.
func (c *counter) trip(now int64, o *Options) {
	if c.until == 0 || now >= c.until+int64(o.LockMemory) {
		c.level = 0
	}
	d := o.LockMin
	for i := uint8(0); i < c.level && d < o.LockMax; i++ {
		d *= 2
	}
	c.until = now + int64(min(d, o.LockMax))
	if c.level < 255 {
		c.level++
	}
}

// fingerprint is one remembered wrong secret of an account.
type fingerprint struct {
	sum       [fpLen]byte
	confirmed int64 // last definite rejection; the fingerprint expires FingerprintTTL later
	checked   int64 // last time the secret was let through to the backend
}

// fpSet is an account's remembered wrong secrets.
type fpSet []fingerprint

// find returns the index of the live fingerprint sum, or -1.
func (s fpSet) find(sum [fpLen]byte, now, ttl int64) int {
	for i := range s {
		if s[i].sum == sum && now < s[i].confirmed+ttl {
			return i
		}
	}
	return -1
}

// prune drops fingerprints expired at now.
func (s fpSet) prune(now, ttl int64) fpSet {
	out := s[:0]
	for _, f := range s {
		if now < f.confirmed+ttl {
			out = append(out, f)
		}
	}
	return out
}

// add records sum, forgetting the least recently confirmed fingerprint if
// the set already holds limit.
func (s fpSet) add(f fingerprint, limit int) fpSet {
	if len(s) < limit {
		return append(s, f)
	}
	oldest := 0
	for i := range s {
		if s[i].confirmed < s[oldest].confirmed {
			oldest = i
		}
	}
	s[oldest] = f
	return s
}

// lastUse returns the newest time in s, for eviction.
func (s fpSet) lastUse() int64 {
	var t int64
	for _, f := range s {
		t = max(t, f.confirmed, f.checked)
	}
	return t
}

// evictOne removes one entry from a full table m: an expired one if the
// sample holds one, else the least recently used of the sample. It returns
// the removed key.
func evictOne[K comparable, V any](m map[K]V, expired func(V) bool, lastUse func(V) int64) K {
	var victim K
	oldest, n := int64(0), 0
	for k, v := range m {
		if expired(v) {
			victim = k
			break
		}
		if t := lastUse(v); n == 0 || t < oldest {
			victim, oldest = k, t
		}
		if n++; n >= evictSample {
			break
		}
	}
	delete(m, victim)
	return victim
}

// normUser is userkey.Fold: one account, however its name is cased.
func normUser(s string) string { return userkey.Fold(s) }

// normIP unmaps IPv4-mapped IPv6 addresses and drops zones.
func normIP(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// keys are the map keys of one attempt.
type keys struct {
	user      string // normalized
	ip        netip.Addr
	accountIP string // user NUL ip
	ipKey     string
	prefixKey string // "" if the IP is invalid
	// exempt is an address of SetExempt: no IP or prefix scope.
	exempt bool
}

// keysFor builds the keys of user and ip.
func (g *Guard) keysFor(user string, ip netip.Addr) keys {
	k := keys{user: normUser(user), ip: normIP(ip)}
	k.exempt = g.exempted(k.ip)
	k.ipKey = k.ip.String()
	k.accountIP = k.user + "\x00" + k.ipKey
	if k.ip.IsValid() {
		bits := g.opts.PrefixV6Bits
		if k.ip.Is4() {
			bits = g.opts.PrefixV4Bits
		}
		if p, err := k.ip.Prefix(bits); err == nil {
			k.prefixKey = p.String()
		}
	}
	return k
}

// scopeKey returns k's key for scope s ("" for none).
func (k *keys) scopeKey(s Scope) string {
	switch s {
	case ScopeAccountIP:
		if k.user == "" {
			return "" // no account: only the address scopes
		}
		return k.accountIP
	case ScopeAccount:
		return k.user
	case ScopeIP:
		if k.exempt {
			return ""
		}
		return k.ipKey
	case ScopePrefix:
		if k.exempt {
			return ""
		}
		return k.prefixKey
	}
	return ""
}

// threshold returns scope s's threshold (divided by SetDivisor's n) and
// window.
func (g *Guard) threshold(s Scope) (int, int64) {
	o := &g.opts
	switch s {
	case ScopeAccountIP:
		return g.divided(o.AccountIPThreshold), int64(o.AccountIPWindow)
	case ScopeAccount:
		return g.divided(o.AccountThreshold), int64(o.AccountWindow)
	case ScopeIP:
		return g.divided(o.IPThreshold), int64(o.IPWindow)
	}
	return g.divided(o.PrefixThreshold), int64(o.PrefixWindow)
}

// counterExpired reports whether a counter of scope s may be dropped.
func (g *Guard) counterExpired(s Scope, c *counter, now int64) bool {
	_, w := g.threshold(s)
	return c.expired(now, w, &g.opts)
}

// counterFor returns scope s's counter for key, creating it (evicting
// another if the table is full) when create is set. Callers hold g.mu.
func (g *Guard) counterFor(s Scope, key string, now int64, create bool) *counter {
	m := g.counters[s]
	if c := m[key]; c != nil || !create {
		return c
	}
	if len(m) >= g.opts.MaxEntries {
		v := evictOne(m, func(c *counter) bool { return g.counterExpired(s, c, now) },
			func(c *counter) int64 { return c.last })
		g.markDirty(bucketCounters, counterKey(s, v))
	}
	c := &counter{}
	m[key] = c
	return c
}

// knownGood reports whether k.ip logged into k.user within KnownGoodTTL.
// Callers hold g.mu.
func (g *Guard) knownGood(k *keys, now int64) bool {
	t, ok := g.good[k.accountIP]
	return ok && now < t+int64(g.opts.KnownGoodTTL)
}

// nanos converts a time from the clock to Unix nanoseconds.
func nanos(t time.Time) int64 { return t.UnixNano() }
