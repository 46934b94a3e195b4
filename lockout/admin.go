package lockout

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Entry is one lock in force, for "kanmon lockout list".
type Entry struct {
	// Scope is what is locked.
	Scope Scope
	// User is the account (normalized: case-folded), for ScopeAccountIP
	// and ScopeAccount.
	User string
	// IP is the client address, for ScopeAccountIP and ScopeIP.
	IP netip.Addr
	// Prefix is the address block, for ScopePrefix.
	Prefix netip.Prefix
	// Failures is the count within the scope's window.
	Failures int
	// Consecutive is the account's failures since its last success, for
	// ScopeAccount.
	Consecutive int
	// Until is when the lock ends.
	Until time.Time
	// Level is the number of locks in the current backoff series (1 for
	// the first, LockMin long).
	Level int
}

// String formats e as "scope key failures=N until=RFC3339".
func (e Entry) String() string {
	return e.Scope.String() + " " + e.key() + " failures=" + strconv.Itoa(e.Failures) +
		" until=" + e.Until.UTC().Format(time.RFC3339)
}

// key returns the locked subject as text.
func (e Entry) key() string {
	switch e.Scope {
	case ScopeAccountIP:
		return e.User + " " + e.IP.String()
	case ScopeAccount:
		return e.User
	case ScopeIP:
		return e.IP.String()
	}
	return e.Prefix.String()
}

// LockCounts returns how many locks are in force in each scope, by the
// scope's name ("account+ip", "account", "ip", "prefix"), every scope
// listed. It is List without building the entries, for a metrics scrape.
func (g *Guard) LockCounts() map[string]int {
	n := nanos(g.opts.Now())
	out := make(map[string]int, numScopes-1)
	g.mu.Lock()
	defer g.mu.Unlock()
	for s := ScopeAccountIP; s < numScopes; s++ {
		locked := 0
		for _, c := range g.counters[s] {
			if c.locked(n) {
				locked++
			}
		}
		out[s.String()] = locked
	}
	return out
}

// List returns the locks in force, ordered by scope, then subject.
func (g *Guard) List() []Entry {
	n := nanos(g.opts.Now())
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Entry
	for s := ScopeAccountIP; s < numScopes; s++ {
		_, w := g.threshold(s)
		for k, c := range g.counters[s] {
			if !c.locked(n) {
				continue
			}
			e := Entry{Scope: s, Failures: c.estimate(n, w), Until: time.Unix(0, c.until), Level: int(c.level)}
			switch s {
			case ScopeAccountIP:
				user, ip, _ := strings.Cut(k, "\x00")
				e.User = user
				e.IP, _ = netip.ParseAddr(ip)
			case ScopeAccount:
				e.User, e.Consecutive = k, int(c.consec)
			case ScopeIP:
				e.IP, _ = netip.ParseAddr(k)
			case ScopePrefix:
				e.Prefix, _ = netip.ParsePrefix(k)
			}
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Scope, b.Scope), strings.Compare(a.key(), b.key()))
	})
	return out
}

// Clear removes counters and locks, and returns how many entries it
// removed. target is
//
//   - an IP address: its IP counter and its (account, IP) counters;
//   - a prefix such as 192.0.2.0/24: the prefix counter, and the IP and
//     (account, IP) counters of the addresses in it;
//   - anything else, a user name: the account counter, the account's
//     (account, IP) counters and its remembered wrong secrets.
//
// Known-good IPs are kept. A locked IP may also be inside a locked prefix:
// List shows both, and each is cleared by name.
func (g *Guard) Clear(target string) int {
	inScope, clearUser := ClearMatcher(target)
	g.mu.Lock()
	defer g.mu.Unlock()
	removed := 0
	if _, ok := g.fps[clearUser]; ok && clearUser != "" {
		delete(g.fps, clearUser)
		g.markDirty(bucketFingerprints, clearUser)
		removed++
	}
	for s := ScopeAccountIP; s < numScopes; s++ {
		for k := range g.counters[s] {
			if inScope(s, k) {
				delete(g.counters[s], k)
				g.markDirty(bucketCounters, counterKey(s, k))
				removed++
			}
		}
	}
	g.kickWriter()
	return removed
}
