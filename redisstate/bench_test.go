//go:build unix

package redisstate_test

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/lockout"
)

// BenchmarkEnforcer compares one login's lockout work (Check, then
// Success) on one node's Guard (bbolt) and on the Guard shared through a
// private redis-server, from 16 goroutines as 16 concurrent logins would:
//
//	go test -run '^$' -bench BenchmarkEnforcer -benchtime 20000x ./redisstate
//
// proc-cpu-us/op is this process's CPU (user + system) per login, which
// is what [redis] adds to kanmon's CPU; redis-cpu-us/op is Redis's own
// (INFO cpu), on the same machine here.
func BenchmarkEnforcer(b *testing.B) {
	r := redistest.Start(b, redistest.Options{})
	shared := newNode(b, r.URL(), nodeOptions{})
	rc := r.Client(b)
	redisCPU := func() time.Duration {
		info, err := rc.Info(b.Context(), "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var total float64
		for _, line := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
		return time.Duration(total * float64(time.Second))
	}
	for _, v := range []struct {
		name string
		e    lockout.Enforcer
	}{{"bbolt", shared.local}, {"redis", shared}} {
		b.Run(v.name, func(b *testing.B) {
			users := make([]string, 64)
			for i := range users {
				users[i] = fmt.Sprintf("user%02d", i)
			}
			ip := netip.MustParseAddr("192.0.2.44")
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			r0 := redisCPU()
			b.SetParallelism(8) // 16 goroutines on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					u := users[i%len(users)]
					i++
					if vd := v.e.Check(u, ip, "ABCDEFGHIJKLMNOP"); vd.Outcome != lockout.Allow {
						b.Errorf("Check: %v", vd)
						return
					}
					v.e.Success(u, ip)
				}
			})
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "proc-cpu-us/op")
			b.ReportMetric(float64((redisCPU()-r0).Microseconds())/float64(b.N), "redis-cpu-us/op")
		})
	}
}
