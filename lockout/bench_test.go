package lockout

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchKeys returns user names and client IPs for a storm: users from a
// pool of 10007, addresses from 65521 in 10.0.0.0/8 (coprime pool sizes,
// so (user, ip) pairs keep changing).
func benchKeys() ([]string, []netip.Addr) {
	users := make([]string, 10007)
	for i := range users {
		users[i] = "user" + strconv.Itoa(i)
	}
	ips := make([]netip.Addr, 65521)
	for i := range ips {
		ips[i] = v4(i>>16, i>>8&0xff, i&0xff)
	}
	return users, ips
}

// BenchmarkFailure records failed logins, each with a new wrong secret (so
// every one is counted, in four scopes, and fingerprinted), with
// persistence on: the time includes writing everything to bbolt
// (fsync'd batches), and records/s is failures recorded and persisted per
// second.
func BenchmarkFailure(b *testing.B) {
	benchFailures(b, func(g *Guard, users []string, ips []netip.Addr) {
		for i := 0; i < b.N; i++ {
			g.Failure(users[i%len(users)], ips[i%len(ips)], "guess"+strconv.Itoa(i))
		}
	})
}

// BenchmarkFailureParallel is BenchmarkFailure from GOMAXPROCS goroutines.
func BenchmarkFailureParallel(b *testing.B) {
	var next atomic.Int64
	benchFailures(b, func(g *Guard, users []string, ips []netip.Addr) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(next.Add(1))
				g.Failure(users[i%len(users)], ips[i%len(ips)], "guess"+strconv.Itoa(i))
			}
		})
	})
}

// benchFailures times record, b.N failures on a fresh Guard, and the
// flush of what it recorded, and reports records/s.
func benchFailures(b *testing.B, record func(g *Guard, users []string, ips []netip.Addr)) {
	g, _, _ := testGuard(b, nil)
	users, ips := benchKeys()
	b.ReportAllocs()
	b.ResetTimer()
	record(g, users, ips)
	if err := g.flush(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkCheck checks logins against a Guard holding the state of a
// 100,000-failure storm: a mix of locked, stale and allowed verdicts.
func BenchmarkCheck(b *testing.B) {
	g, _, _ := testGuard(b, nil)
	users, ips := benchKeys()
	for i := range 100_000 {
		g.Failure(users[i%len(users)], ips[i%len(ips)], "guess"+strconv.Itoa(i%3))
	}
	if err := g.flush(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g.Check(users[i%len(users)], ips[(i*7)%len(ips)], "guess"+strconv.Itoa(i%5))
	}
}

// BenchmarkFlushBatch times the write path alone: each op records 2,000
// distinct failures (what arrives in one 100 ms batch window at 20,000
// failures/s; untimed) and then writes them to bbolt in one fsync'd
// transaction (timed). ms/batch must stay well under BatchDelay for the
// writer to keep up with that rate; failures/s is the rate the write path
// alone could absorb. Each op then waits (untimed) until the background
// writer, woken BatchDelay after the op's first failure, has found nothing
// left to write, so it never takes a batch off the timed flush.
func BenchmarkFlushBatch(b *testing.B) {
	const batch = 2000
	g, _, _ := testGuard(b, nil)
	users, ips := benchKeys()
	time.Sleep(2 * g.opts.BatchDelay) // Open's own first write
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for range b.N {
		b.StopTimer()
		start := time.Now()
		for range batch {
			g.Failure(users[i%len(users)], ips[i%len(ips)], "guess"+strconv.Itoa(i))
			i++
		}
		b.StartTimer()
		if err := g.flush(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		time.Sleep(time.Until(start.Add(g.opts.BatchDelay + 20*time.Millisecond)))
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/batch")
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "failures/s")
}
