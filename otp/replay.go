package otp

import (
	"sync"

	"github.com/kanmon-mail/kanmon/internal/userkey"
)

// Replay decides whether the time step of a code Verify accepted may be
// used: it must refuse a step, once used, for the rest of its validity, and
// any older step of the same user (case-folded). ReplayGuard is the one of
// a single node, in memory; redisstate.TOTPReplay is the one several nodes
// share, atomic across them.
type Replay interface {
	// Claim records step for user and reports true, unless a step at or
	// after step was already accepted for user: then it reports false and
	// records nothing. An error means the guard could not decide (a
	// shared store is unreachable); the code must then be refused, as a
	// temporary fault, not as a wrong code.
	Claim(user string, step int64) (bool, error)
}

// minPrune is the number of remembered users from which Accept starts to
// forget users whose last step can no longer matter.
const minPrune = 1024

// ReplayGuard remembers, per user, the last time step a code was accepted
// for, so that a code, once used, is refused for the rest of its validity:
// a code observed over someone's shoulder or replayed from a log cannot be
// used again. User names are case-folded. It is held in memory: a restart
// forgets it, which at worst lets a code seen in the last (2·Skew+1)·Period
// before the restart be used once more; several nodes share
// redisstate.TOTPReplay instead. The zero value is ready to use and
// it is safe for concurrent use.
type ReplayGuard struct {
	mu    sync.Mutex
	last  map[string]int64 // folded user -> last accepted step
	limit int              // prune when len(last) reaches this
}

// Accept records step for user and reports true, unless a step at or after
// step was already accepted for user, in which case it reports false and
// records nothing. Call it only with the step of a code Verify accepted.
func (g *ReplayGuard) Accept(user string, step int64) bool {
	key := userkey.Fold(user)
	g.mu.Lock()
	defer g.mu.Unlock()
	if last, ok := g.last[key]; ok && last >= step {
		return false
	}
	if g.last == nil {
		g.last = map[string]int64{}
	}
	if len(g.last) >= max(g.limit, minPrune) {
		g.prune(step)
	}
	g.last[key] = step
	return true
}

// Claim is Accept as a Replay: it never fails.
func (g *ReplayGuard) Claim(user string, step int64) (bool, error) { return g.Accept(user, step), nil }

// prune forgets the users whose last step is so old that it cannot refuse
// any code that verifies from now on. step is one just verified, so now is
// within Skew of it and any future verified step is at least
// step-2·Skew.
func (g *ReplayGuard) prune(step int64) {
	for k, last := range g.last {
		if last < step-2*Skew {
			delete(g.last, k)
		}
	}
	g.limit = 2 * len(g.last)
}
