package proxy

import (
	"testing"
	"time"
)

// Under a flood one refusal per cap and second is logged, and the next
// line tells how many went unlogged; each cap has its own count.
func TestRefusalLogThins(t *testing.T) {
	var r refusalLog
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at       time.Duration
		limit    string
		log      bool
		unlogged int
	}{
		{0, limitConnections, true, 0},
		{10 * time.Millisecond, limitConnections, false, 0},
		{20 * time.Millisecond, limitConnections, false, 0},
		{30 * time.Millisecond, limitPreAuthPerIP, true, 0},
		{time.Second, limitConnections, true, 2},
		{time.Second + time.Millisecond, limitConnections, false, 0},
		{3 * time.Second, limitConnections, true, 1},
	}
	for i, s := range steps {
		log, n := r.note(t0.Add(s.at), s.limit)
		if log != s.log || n != s.unlogged {
			t.Errorf("step %d (%s at %v): log %v, unlogged %d; want %v, %d", i, s.limit, s.at, log, n, s.log, s.unlogged)
		}
	}
}
