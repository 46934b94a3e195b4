package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/redistest"
)

// BenchmarkClusterStorm is BenchmarkLoginStorm's "defaults" case over two
// `kanmon serve` nodes sharing a private redis-server (issue 12): a storm
// of failed logins at KANMON_STORM_RATE (2000) attempts/s, half at each
// node, while alice logs in KANMON_STORM_LOGINS (1000) times, at the two
// nodes in turn; the legit logins' latency calm and during the storm.
//
//	go test -run '^$' -bench BenchmarkClusterStorm -benchtime 1x ./e2e
func BenchmarkClusterStorm(b *testing.B) {
	rate := envInt(b, "KANMON_STORM_RATE", 2000)
	n := envInt(b, "KANMON_STORM_LOGINS", 1000)
	tarpit, err := time.ParseDuration(envString("KANMON_STORM_TARPIT", "1s"))
	if err != nil {
		b.Fatal(err)
	}
	users := stormUsers()
	r := redistest.Start(b, redistest.Options{})
	dc := startDovecot(b, dovecottest.Options{}, "alice")
	c := startCluster(b, dc, clusterOptions{
		nodes: 2, plaintext: true,
		redis:       fmt.Sprintf("url = %q\n", r.URL()),
		lockoutBase: fmt.Sprintf("tarpit = %q\n", tarpit),
		twoFA:       users[1:],
		extra:       "max_connections = 30000\nmax_preauth_per_ip = 30000\nmax_preauth_per_prefix = 30000\n",
	})
	i := 0
	legit := func() (time.Duration, error) {
		i++
		return timedLogin(c.files[i%2].IMAPPlain, "alice", c.passcode)
	}
	if _, err := legit(); err != nil { // 127.0.0.1 becomes known-good
		b.Fatalf("first login: %v", err)
	}
	b.ResetTimer()
	calm := make([]time.Duration, 0, n)
	measure := func(into *[]time.Duration) int {
		failed := 0
		for range n {
			d, err := legit()
			if err != nil {
				failed++
				continue
			}
			*into = append(*into, d)
		}
		return failed
	}
	calmFailed := measure(&calm)

	ctx, stop := context.WithCancel(context.Background())
	st := &stormStats{}
	waits := []func(){
		startStorm(ctx, c.files[0].IMAPPlain, rate/2, 3000, users, st),
		startStorm(ctx, c.files[1].IMAPPlain, rate-rate/2, 3000, users, st),
	}
	time.Sleep(2*tarpit + time.Second)
	c0, t0 := st.completed(), time.Now()
	storm := make([]time.Duration, 0, n)
	stormFailed := measure(&storm)
	c1, window := st.completed(), time.Since(t0)
	stop()
	for _, w := range waits {
		w()
	}
	b.StopTimer()
	if got := st.ok.Load(); got != 0 {
		b.Errorf("%d storm logins succeeded", got)
	}
	pc := func(d []time.Duration, p int) float64 { return ms(percentile(d, p)) }
	b.ReportMetric(pc(calm, 50), "calm-p50-ms")
	b.ReportMetric(pc(calm, 99), "calm-p99-ms")
	b.ReportMetric(pc(storm, 50), "storm-p50-ms")
	b.ReportMetric(pc(storm, 99), "storm-p99-ms")
	b.ReportMetric(float64(c1-c0)/window.Seconds(), "storm-failures/s")
	b.ReportMetric(0, "ns/op")
	var sb strings.Builder
	fmt.Fprintf(&sb, "two nodes, one Redis; %d calm + %d storm legit logins, %d + %d failed\n", n, n, calmFailed, stormFailed)
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{{"calm", calm}, {"storm", storm}} {
		fmt.Fprintf(&sb, "%-6s p50 %.2f ms, p90 %.2f, p99 %.2f, max %.2f\n", row.name, pc(row.d, 50), pc(row.d, 90), pc(row.d, 99), ms(slices.Max(row.d)))
	}
	fmt.Fprintf(&sb, "storm: %d failed logins in %v = %.0f/s; refused %d, unavailable %d, errors %d, dropped %d\n",
		c1-c0, window.Round(time.Millisecond), float64(c1-c0)/window.Seconds(),
		st.failed.Load(), st.unavailable.Load(), st.errs.Load(), st.dropped.Load())
	for k, p := range c.nodes {
		logs := p.log.String()
		fmt.Fprintf(&sb, "node %d: %d counted, locked %d account+ip / %d account / %d ip / %d prefix\n", k+1,
			strings.Count(logs, "lockout.counted=true"), strings.Count(logs, `reason="locked: account+ip"`),
			strings.Count(logs, `reason="locked: account"`), strings.Count(logs, `reason="locked: ip"`),
			strings.Count(logs, `reason="locked: prefix"`))
	}
	b.Log(sb.String())
	if calmFailed+stormFailed > 0 {
		b.Errorf("%d legit logins failed", calmFailed+stormFailed)
	}
}
