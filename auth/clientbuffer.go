package auth

import (
	"sync"
	"sync/atomic"
	"time"
)

// ClientPendingMax bounds the accounts whose client changes may wait in
// memory to be written; a change for an account not waiting yet, arriving
// while the buffer is full (a store that does not answer), is dropped and
// counted.
const ClientPendingMax = 65536

// ClientSlot names one account's record of one kind.
type ClientSlot struct {
	Kind ClientKind
	// User is the account's ClientUserKey.
	User string
}

// ClientPending is what waits to be written to one account's record:
// Forgets to apply to the stored record first, then Seen to merge in.
// Each is bounded by MaxClientsPerAccount, however many changes came.
type ClientPending struct {
	// Forgets are the clients of Forget calls, at most one per match.
	Forgets []PasswordClient
	// Seen are the sightings since, merged as MergeClients does.
	Seen []PasswordClient
}

// Apply applies p to the stored record list.
func (p ClientPending) Apply(list []PasswordClient, now time.Time) []PasswordClient {
	for _, f := range p.Forgets {
		list = ForgetClients(list, f)
	}
	return MergeClients(list, p.Seen, now)
}

// ClientBuffer holds the changes of a ClientKeeper until they are
// written, compacted per account as they come: however many sightings an
// account gets between two writes, it waits as at most
// MaxClientsPerAccount rows. Safe for concurrent use.
type ClientBuffer struct {
	mu      sync.Mutex
	pending map[ClientSlot]*ClientPending
	max     int
	dropped atomic.Uint64
}

// NewClientBuffer returns an empty buffer of at most max accounts
// (ClientPendingMax when max ≤ 0).
func NewClientBuffer(max int) *ClientBuffer {
	if max <= 0 {
		max = ClientPendingMax
	}
	return &ClientBuffer{pending: map[ClientSlot]*ClientPending{}, max: max}
}

// slotLocked returns the pending changes of slot, making room for them;
// nil when the buffer is full. b.mu is held.
func (b *ClientBuffer) slotLocked(slot ClientSlot) *ClientPending {
	if p := b.pending[slot]; p != nil {
		return p
	}
	if len(b.pending) >= b.max {
		b.dropped.Add(1)
		return nil
	}
	p := &ClientPending{}
	b.pending[slot] = p
	return p
}

// Seen buffers a sighting of c for user; false when it was dropped.
func (b *ClientBuffer) Seen(kind ClientKind, user string, c PasswordClient, now time.Time) bool {
	if !kind.Valid() || user == "" {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.slotLocked(ClientSlot{kind, ClientUserKey(user)})
	if p == nil {
		return false
	}
	c = c.sanitize()
	for i := range p.Seen {
		// A client that waits already (a stale app knocking again) adds
		// to its row; the order of waiting rows does not matter, since
		// Apply merges and sorts them.
		if w := &p.Seen[i]; w.Protocol == c.Protocol && w.Name == c.Name && w.IP == c.IP {
			*w = combine(*w, c)
			return true
		}
	}
	p.Seen = MergeClients(p.Seen, []PasswordClient{c}, now)
	return true
}

// Forget buffers a Forget of c for user's refused record.
func (b *ClientBuffer) Forget(user string, c PasswordClient) bool {
	if user == "" {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.slotLocked(ClientSlot{ClientRefused, ClientUserKey(user)})
	if p == nil {
		return false
	}
	p.Seen = ForgetClients(p.Seen, c)
	f := PasswordClient{Protocol: c.Protocol, Name: printable(c.Name, maxClientName), IP: c.IP}
	for _, w := range p.Forgets {
		if ForgetMatch(w, f) {
			return true // a Forget as wide waits already
		}
	}
	if len(p.Forgets) < MaxClientsPerAccount {
		p.Forgets = append(p.Forgets, f)
	}
	return true
}

// Take returns everything waiting and empties the buffer.
func (b *ClientBuffer) Take() map[ClientSlot]ClientPending {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[ClientSlot]ClientPending, len(b.pending))
	for s, p := range b.pending {
		out[s] = *p
	}
	clear(b.pending)
	return out
}

// PutBack returns changes that could not be written: each waits again,
// before whatever came for its account since Take, so that the order of
// an account's changes is kept. An account that finds no room is dropped
// and counted.
func (b *ClientBuffer) PutBack(batch map[ClientSlot]ClientPending, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for slot, old := range batch {
		newer := b.pending[slot]
		if newer == nil {
			if len(b.pending) >= b.max {
				b.dropped.Add(1)
				continue
			}
			p := old
			b.pending[slot] = &p
			continue
		}
		// old, then newer: newer's forgets remove old's sightings.
		seen := old.Seen
		for _, f := range newer.Forgets {
			seen = ForgetClients(seen, f)
		}
		forgets := old.Forgets
		for _, f := range newer.Forgets {
			if len(forgets) < MaxClientsPerAccount {
				forgets = append(forgets, f)
			}
		}
		newer.Forgets = forgets
		newer.Seen = MergeClients(seen, newer.Seen, now)
	}
}

// Peek returns what waits for slot, for reads that must include it.
func (b *ClientBuffer) Peek(slot ClientSlot) (ClientPending, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending[slot]
	if p == nil {
		return ClientPending{}, false
	}
	return ClientPending{Forgets: append([]PasswordClient(nil), p.Forgets...), Seen: append([]PasswordClient(nil), p.Seen...)}, true
}

// Slots returns the slots of kind with changes waiting.
func (b *ClientBuffer) Slots(kind ClientKind) []ClientSlot {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []ClientSlot
	for s := range b.pending {
		if s.Kind == kind {
			out = append(out, s)
		}
	}
	return out
}

// Len returns how many accounts have changes waiting.
func (b *ClientBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// Dropped returns how many changes were dropped for want of room.
func (b *ClientBuffer) Dropped() uint64 { return b.dropped.Load() }
