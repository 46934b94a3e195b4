package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// BenchmarkSiege holds kanmon under a siege of idle pre-login connections
// and measures whether real users still get in (issue 18):
//
//	go test -run '^$' -bench BenchmarkSiege -benchtime 1x -timeout 20m ./e2e
//
// The real `kanmon serve`, with its default limits (max_connections
// 10,000, 10% of them reserved, max_preauth_per_ip 20,
// max_preauth_per_prefix 100, preauth_lifetime 3m, stress mode at 75%),
// stands in front of a private Dovecot with IMAP, POP3 and submission, on
// plain loopback listeners. The attacker is KANMON_SIEGE_ADDRS (500)
// addresses, each in a /24 of its own (127.100.0.1, 127.100.1.1, …: the
// worst case for the per-prefix cap), each holding
// KANMON_SIEGE_PER_ADDR (20) connections, a third per protocol, that send
// NOOP (or EHLO then NOOP) every KANMON_SIEGE_NOOP (50 s) and reconnect
// when kanmon lets them go, for KANMON_SIEGE_SECONDS (120).
//
// After a ramp-up, every 2 s: alice (2FA) logs in with her passcode from
// 127.0.0.50, an address she used once before the siege (known-good, not
// on the campus), and carol (no 2FA) with her password from 127.0.0.1
// (trusted_networks), on IMAP, POP3 and submission in turn; each login is
// a fresh connection, timed from dial to the success reply. Reported: the
// logins' median and worst latency per protocol and failures, the longest
// life of an attacker connection, the attacker connections refused and
// let go, kanmon's peak RSS, and the peaks of kanmon_preauth_connections
// and kanmon_stress_mode. Loopback only; every loop is bounded by the run.
func BenchmarkSiege(b *testing.B) {
	addrs := envInt(b, "KANMON_SIEGE_ADDRS", 500)
	perAddr := envInt(b, "KANMON_SIEGE_PER_ADDR", 20)
	seconds := envInt(b, "KANMON_SIEGE_SECONDS", 120)
	noop, err := time.ParseDuration(envString("KANMON_SIEGE_NOOP", "50s"))
	if err != nil {
		b.Fatal(err)
	}
	raiseNoFile(b, uint64(addrs*perAddr+4096))

	dc := startDovecot(b, dovecottest.Options{SubmissionRelay: dovecottest.StartSink(b).Addr}, "alice", "carol")
	bin := os.Getenv("KANMON_SIEGE_BIN") // another kanmon, for a before-and-after
	if bin == "" {
		bin = buildKanmon(b)
	}
	files := kanmontest.WriteFiles(b, kanmontest.Options{
		IMAPBackend: dc.IMAPAddr, POP3Backend: dc.POP3Addr, SubmissionBackend: dc.SubmissionAddr,
		MasterUser: masterUser, MasterPassword: masterPassword,
		Listeners:      []string{"none"},
		Lockout:        kanmontest.ServerLockout,
		MetricsAddress: true,
	})
	mustRun(b, bin, "2fa", "enable", "-config", files.ConfigPath, "alice")
	passcode := cliAddPasscode(b, bin, "-config", files.ConfigPath, "alice", "Thunderbird")
	p := startServe(b, bin, files.ConfigPath, files.IMAPPlain)

	users := []siegeUser{
		{"alice (2FA, known-good)", "127.0.0.50", "alice", passcode},
		{"carol (password, campus)", "127.0.0.1", "carol", passwords["carol"]},
	}
	protos := []siegeProto{
		{"imap", files.IMAPPlain}, {"pop3", files.POP3Plain}, {"submission", files.SubmissionPlain},
	}
	for _, pr := range protos { // alice's address becomes known-good
		if err := siegeLogin(pr, users[0]); err != nil {
			b.Fatalf("alice before the siege on %s: %v", pr.name, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	defer cancel()
	var st siegeStats
	var wg sync.WaitGroup
	for a := range addrs {
		ip := fmt.Sprintf("127.%d.%d.1", 100+a/250, a%250)
		for i := range perAddr {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(a*perAddr+i) * time.Millisecond / 4) // ramp: 4,000 a second
				attackerConn(ctx, protos[i%3], ip, noop, &st)
			}()
		}
	}
	var peakRSS, peakPreAuth, stress atomic.Int64
	go sampleServe(ctx, p.cmd.Process.Pid, files.MetricsAddr, &peakRSS, &peakPreAuth, &stress)

	ramp := time.Duration(addrs*perAddr)*time.Millisecond/4 + 5*time.Second
	select {
	case <-time.After(ramp):
	case <-ctx.Done():
	}
	lat := map[string][]time.Duration{}
	failed := map[string]int{}
	for i := 0; ctx.Err() == nil; i++ {
		u, pr := users[i%2], protos[(i/2)%3]
		key := pr.name + " " + u.what
		start := time.Now()
		if err := siegeLogin(pr, u); err != nil {
			failed[key]++
			b.Logf("%s: %v", key, err)
		} else {
			lat[key] = append(lat[key], time.Since(start))
		}
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
	}
	wg.Wait()

	for _, key := range slices.Sorted(maps.Keys(lat)) {
		d := lat[key]
		slices.Sort(d)
		b.Logf("%-40s logins %3d, failed %d, median %v, worst %v", key, len(d), failed[key],
			d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
		f := strings.Fields(key)
		b.ReportMetric(float64(d[len(d)-1].Milliseconds()), "worst-ms-"+f[0]+"-"+f[1])
	}
	for key, n := range failed {
		if lat[key] == nil {
			b.Errorf("%s: all %d logins failed", key, n)
		}
	}
	b.Logf("attacker: %d connections greeted, %d refused, %d let go by kanmon; longest life %v; kanmon peak RSS %d MiB, peak pre-auth connections %d, stress mode seen %v",
		st.greeted.Load(), st.refused.Load(), st.letGo.Load(), time.Duration(st.longest.Load()).Round(time.Second),
		peakRSS.Load()>>20, peakPreAuth.Load(), stress.Load() == 1)
	b.ReportMetric(time.Duration(st.longest.Load()).Seconds(), "longest-attacker-s")
	b.ReportMetric(float64(peakRSS.Load()>>20), "peak-rss-MiB")
	b.ReportMetric(float64(peakPreAuth.Load()), "peak-preauth")
}

// siegeUser is a real user of the siege: who logs in from where.
type siegeUser struct{ what, ip, user, secret string }

// siegeProto is a protocol and kanmon's plain listener for it.
type siegeProto struct{ name, addr string }

// siegeStats counts the attacker's connections.
type siegeStats struct {
	greeted, refused, letGo atomic.Int64
	longest                 atomic.Int64 // nanoseconds
}

// siegeLogin logs u in on pr from u.ip on a fresh connection, and
// returns an error unless kanmon says it succeeded.
func siegeLogin(pr siegeProto, u siegeUser) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(u.ip)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", pr.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	say := func(line string) (string, error) {
		if line != "" {
			if _, err := fmt.Fprintf(c, "%s\r\n", line); err != nil {
				return "", err
			}
		}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return "", err
			}
			if pr.name != "submission" || len(l) < 4 || l[3] != '-' {
				return strings.TrimRight(l, "\r\n"), nil
			}
		}
	}
	var steps []string
	var want string
	switch pr.name {
	case "imap":
		steps, want = []string{"", fmt.Sprintf("a1 LOGIN %s %q", u.user, u.secret)}, "a1 OK"
	case "pop3":
		steps, want = []string{"", "USER " + u.user, "PASS " + u.secret}, "+OK"
	default:
		steps, want = []string{"", "EHLO siege.example", "AUTH PLAIN " + plainResponse(u.user, u.secret)}, "235 "
	}
	var last string
	for _, s := range steps {
		if last, err = say(s); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(last, want) {
		return fmt.Errorf("reply %q", last)
	}
	return nil
}

// attackerConn is one attacker connection slot: connect from ip, keep the
// connection alive with a NOOP every interval, and reconnect (after a
// pause when refused) whenever kanmon lets it go, until ctx ends.
func attackerConn(ctx context.Context, pr siegeProto, ip string, interval time.Duration, st *siegeStats) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", pr.addr)
		if err != nil {
			pause(ctx, time.Second)
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		greeting, err := br.ReadString('\n')
		if err != nil || strings.Contains(greeting, "Too many connections") {
			st.refused.Add(1)
			stop()
			c.Close()
			pause(ctx, time.Second)
			continue
		}
		st.greeted.Add(1)
		start := time.Now()
		if pr.name == "submission" {
			_, _ = fmt.Fprint(c, "EHLO attacker.example\r\n")
		}
		next := time.Now().Add(interval)
		for {
			_ = c.SetReadDeadline(next)
			_, err := br.ReadString('\n')
			if err == nil {
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
				_, _ = fmt.Fprint(c, noopLine(pr.name))
				next = time.Now().Add(interval)
				continue
			}
			break
		}
		if ctx.Err() == nil {
			st.letGo.Add(1)
			life := int64(time.Since(start))
			for {
				old := st.longest.Load()
				if life <= old || st.longest.CompareAndSwap(old, life) {
					break
				}
			}
		}
		stop()
		c.Close()
	}
}

// noopLine is NOOP in proto's words, with its CRLF.
func noopLine(proto string) string {
	if proto == "imap" {
		return "a NOOP\r\n"
	}
	return "NOOP\r\n"
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// sampleServe reads kanmon's VmRSS from /proc and its pre-auth and stress
// gauges from /metrics every second until ctx ends, keeping the peaks.
func sampleServe(ctx context.Context, pid int, metricsAddr string, rss, preAuth, stress *atomic.Int64) {
	for ctx.Err() == nil {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
					if kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64); err == nil && kb<<10 > rss.Load() {
						rss.Store(kb << 10)
					}
				}
			}
		}
		if text, err := fetchText("http://" + metricsAddr + "/metrics"); err == nil {
			for _, l := range strings.Split(text, "\n") {
				if v, ok := strings.CutPrefix(l, "kanmon_preauth_connections "); ok {
					if n, err := strconv.ParseFloat(v, 64); err == nil && int64(n) > preAuth.Load() {
						preAuth.Store(int64(n))
					}
				}
				if l == "kanmon_stress_mode 1" {
					stress.Store(1)
				}
			}
		}
		pause(ctx, time.Second)
	}
}

// fetchText GETs url and returns the body.
func fetchText(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// raiseNoFile raises RLIMIT_NOFILE's soft limit toward want (the hard
// limit caps it); kanmon serve inherits it.
func raiseNoFile(b *testing.B, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	lim.Cur = min(max(lim.Cur, want), lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur < want {
		b.Logf("RLIMIT_NOFILE is %d, below the %d the siege wants", lim.Cur, want)
	}
}
