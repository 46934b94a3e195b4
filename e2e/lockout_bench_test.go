package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// BenchmarkLoginStorm measures legitimate logins through kanmon while a
// storm of failed logins runs, against the real Dovecot, on loopback only:
//
//	go test -run '^$' -bench BenchmarkLoginStorm -benchtime 1x ./e2e
//
// It starts a private Dovecot and an in-process kanmon (plaintext IMAP
// listener). alice, with 2FA, logs in once from 127.0.0.1 (so that IP is
// known-good for her), then:
//
//  1. calm: N sequential legit logins (a fresh connection each; the
//     measured time is LOGIN with her passcode until the tagged OK, which
//     includes kanmon's lockout check, the passcode check and the master
//     login at Dovecot), each followed by a direct login at Dovecot with
//     her password, the baseline for the same machine;
//  2. storm: the same N pairs while a storm of failed logins runs at
//     KANMON_STORM_RATE (default 2000) attempts/s from the 256 addresses
//     127.0.1.0–127.0.1.255, one attempt per connection, with random
//     wrong passcodes for alice and 255 other 2FA accounts. Measurement
//     starts after a warm-up of 2 × the tarpit + 1 s, once the storm is in
//     its steady state.
//
// The tarpit is the real default, 1 s (KANMON_STORM_TARPIT overrides), so
// the storm keeps about rate × tarpit connections waiting in kanmon.
//
// Sub-benchmarks: "defaults" runs the default [lockout] thresholds, where
// the storm soon trips the prefix, IP and account locks and most of it is
// refused by Check; "counting" raises the thresholds so that nearly every
// storm failure is counted in four scopes, fingerprinted and written to
// bbolt (until each storm account reaches max_account_failures = 100).
//
// N is KANMON_STORM_LOGINS (default 1000). The storm is bounded by the
// measurement (plus warm-up) and by 6000 attempts in flight; attempts it
// could not start are reported as dropped.
func BenchmarkLoginStorm(b *testing.B) {
	tarpit := envString("KANMON_STORM_TARPIT", "1s")
	thresholdsOff := "account_ip_threshold = 1000000000\naccount_threshold = 1000000000\nip_threshold = 1000000000\nprefix_threshold = 1000000000\n"
	for _, v := range []struct{ name, lockout string }{
		{"defaults", ""},
		{"counting", thresholdsOff},
	} {
		b.Run(v.name, func(b *testing.B) {
			runLoginStorm(b, fmt.Sprintf("tarpit = %q\ntarpit_max = %q\n%s", tarpit, "8s", v.lockout))
		})
	}
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// stormUsers is the storm's target accounts: alice and 255 others, all
// with 2FA so that every wrong passcode is a definite failure kanmon
// decides itself (Dovecot is never asked).
func stormUsers() []string {
	users := []string{"alice"}
	for i := 1; i < 256; i++ {
		users = append(users, fmt.Sprintf("storm%03d", i))
	}
	return users
}

func runLoginStorm(b *testing.B, lockoutBody string) {
	rate := envInt(b, "KANMON_STORM_RATE", 2000)
	n := envInt(b, "KANMON_STORM_LOGINS", 1000)
	tarpit, err := time.ParseDuration(envString("KANMON_STORM_TARPIT", "1s"))
	if err != nil {
		b.Fatal(err)
	}
	const maxInFlight = 6000

	dc := startDovecot(b, dovecottest.Options{}, "alice")
	users := stormUsers()
	passcodes := map[string][]string{"alice": {"Thunderbird"}}
	for _, u := range users[1:] {
		passcodes[u] = nil
	}
	k := kanmontest.Start(b, kanmontest.Options{
		IMAPBackend: dc.IMAPAddr,
		MasterUser:  masterUser, MasterPassword: masterPassword,
		Passcodes: passcodes,
		Lockout:   lockoutBody,
	})
	passcode := k.Passcode("alice", "Thunderbird")
	viaKanmon := func() (time.Duration, error) { return timedLogin(k.IMAPPlain, "alice", passcode) }
	direct := func() (time.Duration, error) { return timedLogin(dc.IMAPAddr, "alice", alicePassword) }

	// alice's usual IP becomes known-good for her.
	if _, err := viaKanmon(); err != nil {
		b.Fatalf("first login: %v", err)
	}

	b.ResetTimer()
	calmK, calmD, calmFail := measurePairs(n, viaKanmon, direct)

	ctx, stop := context.WithCancel(context.Background())
	st := &stormStats{}
	stormDone := startStorm(ctx, k.IMAPPlain, rate, maxInFlight, users, st)
	time.Sleep(2*tarpit + time.Second)
	c0, t0 := st.completed(), time.Now()
	stormK, stormD, stormFail := measurePairs(n, viaKanmon, direct)
	c1, window := st.completed(), time.Since(t0)
	stop()
	stormDone()
	b.StopTimer()

	// The storm was refused, and it left locks or counted failures.
	if got := st.ok.Load(); got != 0 {
		b.Errorf("%d storm logins succeeded", got)
	}
	stormRate := float64(c1-c0) / window.Seconds()
	pc := func(d []time.Duration, p int) float64 { return ms(percentile(d, p)) }
	b.ReportMetric(pc(calmK, 50), "calm-p50-ms")
	b.ReportMetric(pc(calmK, 99), "calm-p99-ms")
	b.ReportMetric(pc(stormK, 50), "storm-p50-ms")
	b.ReportMetric(pc(stormK, 99), "storm-p99-ms")
	b.ReportMetric(pc(stormK, 99)/pc(calmK, 99), "p99-ratio")
	b.ReportMetric(float64(calmFail.add(stormFail).kanmon), "legit-failures")
	b.ReportMetric(stormRate, "storm-failures/s")
	b.ReportMetric(0, "ns/op")

	var sb strings.Builder
	fmt.Fprintf(&sb, "%d calm + %d storm legit logins, %d + %d failed; storm target %d/s, tarpit %v\n",
		n, n, calmFail.kanmon, stormFail.kanmon, rate, tarpit)
	fmt.Fprintf(&sb, "%-22s %8s %8s %8s %8s\n", "LOGIN until OK (ms)", "p50", "p90", "p99", "max")
	row := func(name string, d []time.Duration) {
		fmt.Fprintf(&sb, "%-22s %8.2f %8.2f %8.2f %8.2f\n", name, pc(d, 50), pc(d, 90), pc(d, 99), ms(slices.Max(d)))
	}
	row("kanmon, calm", calmK)
	row("kanmon, storm", stormK)
	row("Dovecot direct, calm", calmD)
	row("Dovecot direct, storm", stormD)
	fmt.Fprintf(&sb, "storm while measured: %d failed logins in %v = %.0f/s, at most %d in flight\n",
		c1-c0, window.Round(time.Millisecond), stormRate, st.maxInFlight.Load())
	fmt.Fprintf(&sb, "storm in all: started %d, refused %d, unavailable %d, ok %d, errors %d, dropped %d (direct legit failures %d)\n",
		st.started.Load(), st.failed.Load(), st.unavailable.Load(), st.ok.Load(), st.errs.Load(), st.dropped.Load(), calmFail.direct+stormFail.direct)
	logs := k.Logs()
	fmt.Fprintf(&sb, "kanmon log: %d failures counted; refused by a lock: %d account+ip, %d account, %d ip, %d prefix; %d stale; %d locks in force",
		strings.Count(logs, "lockout.counted=true"), strings.Count(logs, `reason="locked: account+ip"`),
		strings.Count(logs, `reason="locked: account"`), strings.Count(logs, `reason="locked: ip"`),
		strings.Count(logs, `reason="locked: prefix"`), strings.Count(logs, `reason="repeated stale secret"`), len(k.Guard.List()))
	if e := st.firstErr.Load(); e != nil {
		fmt.Fprintf(&sb, "\nfirst storm error: %v", *e)
	}
	b.Log(sb.String())
	if f := calmFail.add(stormFail).kanmon; f > 0 {
		b.Errorf("%d legit logins through kanmon failed", f)
	}
}

// failures counts failed legit logins.
type failures struct{ kanmon, direct int }

func (f failures) add(g failures) failures { return failures{f.kanmon + g.kanmon, f.direct + g.direct} }

// measurePairs runs n (kanmon, direct) login pairs in sequence and returns
// the durations of the successful ones and the failure counts.
func measurePairs(n int, viaKanmon, direct func() (time.Duration, error)) (k, d []time.Duration, f failures) {
	for range n {
		if t, err := viaKanmon(); err != nil {
			f.kanmon++
		} else {
			k = append(k, t)
		}
		if t, err := direct(); err != nil {
			f.direct++
		} else {
			d = append(d, t)
		}
	}
	return k, d, f
}

// timedLogin connects to addr from 127.0.0.1, reads the greeting and
// returns how long LOGIN took until its tagged OK; then it logs out.
func timedLogin(addr, user, secret string) (time.Duration, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
		return 0, fmt.Errorf("greeting %q: %v", g, err)
	}
	start := time.Now()
	if _, err := fmt.Fprintf(c, "a1 LOGIN %s %q\r\n", user, secret); err != nil {
		return 0, err
	}
	reply, err := readTagged(br, "a1")
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(reply, "a1 OK") {
		return 0, fmt.Errorf("login: %q", reply)
	}
	_, _ = fmt.Fprintf(c, "a2 LOGOUT\r\n")
	_, _ = readTagged(br, "a2")
	return took, nil
}

// readTagged reads lines until the one tagged tag and returns it.
func readTagged(br *bufio.Reader, tag string) (string, error) {
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return l, err
		}
		if strings.HasPrefix(l, tag+" ") {
			return strings.TrimRight(l, "\r\n"), nil
		}
	}
}

// stormStats are the storm's counters.
type stormStats struct {
	started, failed, unavailable, ok, errs, dropped atomic.Int64
	inFlight, maxInFlight                           atomic.Int64
	firstErr                                        atomic.Pointer[error]
}

// completed is the number of storm attempts answered so far.
func (s *stormStats) completed() int64 { return s.failed.Load() + s.unavailable.Load() + s.ok.Load() }

// startStorm starts failed logins at rate per second against addr until
// ctx ends, each from 127.0.1.x (x = attempt mod 256) on its own
// connection with a random wrong passcode for one of users. It returns a
// function that waits for the attempts in flight.
func startStorm(ctx context.Context, addr string, rate, maxInFlight int, users []string, st *stormStats) (wait func()) {
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	attempt := func(i int) {
		defer wg.Done()
		defer func() { <-sem; st.inFlight.Add(-1) }()
		if f := st.inFlight.Add(1); f > st.maxInFlight.Load() {
			st.maxInFlight.Store(f) // approximate: good enough for a report
		}
		err := stormLogin(addr, byte(i%256), users[i%len(users)], randomPasscode())
		switch {
		case err == nil:
			st.ok.Add(1)
		case errors.Is(err, errStormRefused):
			st.failed.Add(1)
		case errors.Is(err, errStormUnavailable):
			st.unavailable.Add(1)
		default:
			st.errs.Add(1)
			st.firstErr.CompareAndSwap(nil, &err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		start, issued := time.Now(), 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for due := int(time.Since(start).Seconds() * float64(rate)); issued < due; issued++ {
				select {
				case sem <- struct{}{}:
					st.started.Add(1)
					wg.Add(1)
					go attempt(issued)
				default:
					st.dropped.Add(1)
				}
			}
		}
	}()
	return func() { <-done; wg.Wait() }
}

var (
	errStormRefused     = errors.New("refused")
	errStormUnavailable = errors.New("unavailable")
)

// stormLogin makes one failed-login attempt from 127.0.1.host.
func stormLogin(addr string, host byte, user, secret string) error {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, host)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if _, err := fmt.Fprintf(c, "s1 LOGIN %s %s\r\n", user, secret); err != nil {
		return err
	}
	reply, err := readTagged(br, "s1")
	switch {
	case err != nil:
		return fmt.Errorf("reply: %w", err)
	case reply == "s1 "+failedReply:
		return errStormRefused
	case strings.HasPrefix(reply, "s1 NO [UNAVAILABLE]"):
		return errStormUnavailable
	case strings.HasPrefix(reply, "s1 OK"):
		return nil
	}
	return fmt.Errorf("unexpected reply %q", reply)
}

// randomPasscode returns 16 random upper-case letters.
func randomPasscode() string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = 'A' + byte(rand.IntN(26))
	}
	return string(b)
}

// percentile returns the p-th percentile (nearest rank) of d.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
