package portal

import (
	"net/netip"
	"sync"
	"time"
)

const (
	// tarpitMemory is how long a client address's failed sign-ins keep
	// raising its tarpit delay.
	tarpitMemory = 15 * time.Minute
	// maxTarpitEntries bounds the addresses remembered.
	maxTarpitEntries = 10000
)

// tarpitCounter counts recent failed sign-ins per client address. A mail
// client's tarpit grows with the failures on its connection (1 s, 2 s,
// 4 s … up to tarpit_max); a browser opens connections at will, so the
// portal counts per address instead (an IPv6 client by its /64, which one
// host commonly holds whole), forgetting after tarpitMemory.
type tarpitCounter struct {
	mu sync.Mutex
	m  map[netip.Addr]tarpitEntry
}

type tarpitEntry struct {
	n    int
	last time.Time
}

func newTarpitCounter() *tarpitCounter {
	return &tarpitCounter{m: map[netip.Addr]tarpitEntry{}}
}

// fail records a failed sign-in from ip and returns how many there were
// recently, this one included. When the table is full, old entries go;
// if none is old, the address counts as a repeat offender (the
// tarpit_max delay), never as a first-timer.
func (t *tarpitCounter) fail(ip netip.Addr, now time.Time) int {
	ip = tarpitKey(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[ip]
	if ok && now.Sub(e.last) >= tarpitMemory {
		e = tarpitEntry{}
	}
	if !ok && len(t.m) >= maxTarpitEntries {
		for k, o := range t.m {
			if now.Sub(o.last) >= tarpitMemory {
				delete(t.m, k)
			}
		}
		if len(t.m) >= maxTarpitEntries {
			return 1 << 10
		}
	}
	e.n++
	e.last = now
	t.m[ip] = e
	return e.n
}

// next returns the count the next failure from ip would have, recording
// nothing: the delay of an answer that is not a counted failure (the
// service unavailable) is that of the next failure.
func (t *tarpitCounter) next(ip netip.Addr, now time.Time) int {
	ip = tarpitKey(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[ip]
	switch {
	case ok && now.Sub(e.last) < tarpitMemory:
		return e.n + 1
	case !ok && len(t.m) >= maxTarpitEntries:
		return 1 << 10
	}
	return 1
}

// reset forgets ip's failures after a successful sign-in.
func (t *tarpitCounter) reset(ip netip.Addr) {
	ip = tarpitKey(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, ip)
}

// tarpitKey is the address a client's failures count under: an IPv4
// address itself, an IPv6 address its /64 (a host can use any address of
// its /64, so counting per address would let it start afresh at will).
func tarpitKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// wait sleeps until d after start. Nothing cuts it short, not even the
// client going away: an answer must never come sooner than its delay,
// and a client that half-closes its connection can still read it.
func wait(start time.Time, d time.Duration) {
	if d -= time.Since(start); d > 0 {
		time.Sleep(d)
	}
}
