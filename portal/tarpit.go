package portal

import (
	"context"
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
// portal counts per address instead, forgetting after tarpitMemory.
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

// reset forgets ip's failures after a successful sign-in.
func (t *tarpitCounter) reset(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, ip)
}

// wait sleeps until d after start, or until ctx ends.
func wait(ctx context.Context, start time.Time, d time.Duration) {
	d -= time.Since(start)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
