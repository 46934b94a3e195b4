//go:build unix

package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// goStats are a few Go runtime gauges from a kanmon's /metrics.
type goStats struct {
	goroutines, heapInuse, stackInuse, gcCount float64
}

func scrape(metricsAddr string) goStats {
	var g goStats
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return g
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "go_goroutines":
			g.goroutines = v
		case "go_memstats_heap_inuse_bytes":
			g.heapInuse = v
		case "go_memstats_stack_inuse_bytes":
			g.stackInuse = v
		case "go_gc_duration_seconds_count":
			g.gcCount = v
		}
	}
	return g
}

// openSessions opens up to n IDLE sessions against t with workers
// clients, handing the users out in turn, and returns the ones that
// opened. It stops early after 100 failures or after limit.
func (e *benchEnv) openSessions(t target, n, workers int, app string, limit time.Duration) ([]*imapConn, int, error) {
	var mu sync.Mutex
	var conns []*imapConn
	var next, failed atomic.Int64
	var firstErr error
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for failed.Load() < 100 && time.Now().Before(deadline) {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				user := e.secrets.users[int(i-1)%len(e.secrets.users)]
				ic, err := openIdle(t, user, e.secretFor(t, user, app))
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, ic)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns, int(failed.Load()), firstErr
}

func closeAll(conns []*imapConn) {
	for _, c := range conns {
		c.c.Close()
	}
}

// idleResult is one mode's idle-memory measurement.
type idleResult struct {
	mode           string
	target         float64 // KiB per session
	held, failed   int
	firstErr       error
	openTime       time.Duration
	before, opened int64 // VmRSS KiB: baseline, settled after opening
	afterGC        int64 // VmRSS KiB after the runtime's next GC
	gcWait         time.Duration
	gcSeen         bool
	pumpLogins     atomic.Int64
	live0, liveMB  int // live heap after the last GC (gctrace), MB: baseline, at the end
	g0, g2         goStats
	sampleBad      int
	dovecotProcs   int
	dovecotPSS     int64
}

func (r *idleResult) per(kib int64) float64 { return float64(kib-r.before) / float64(max(r.held, 1)) }

// idleSetup makes a second kanmon config directory that shares the first
// one's accounts and pepper (so the same passcodes work), for a kanmon
// that runs at the same time on other ports.
func (e *benchEnv) idleSetup(name string) (*kanmonSetup, error) {
	dir := filepath.Join(e.ks.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ks, err := newKanmonSetup(e.ks.bin, dir, e.dc.IMAPAddr)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"accounts.toml", "state/pepper"} {
		if err := copyFile(filepath.Join(e.ks.Dir, f), filepath.Join(dir, f)); err != nil {
			return nil, err
		}
	}
	pinClientTLS(ks.ClientTLS)
	return ks, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// measureIdle runs one mode against its own fresh kanmon.
func (e *benchEnv) measureIdle(ks *kanmonSetup, mode string, tls bool, targetKiB float64) (*idleResult, error) {
	o := e.o
	r := &idleResult{mode: mode, target: targetKiB}
	t := target{name: "via kanmon", addr: ks.IMAPPlain}
	if tls {
		t = target{name: "via kanmon", addr: ks.IMAPS, tls: ks.ClientTLS}
	}
	// gctrace lines tell when a GC ran without asking kanmon anything
	// (a /metrics scrape allocates, and would itself move the heap).
	kp, err := ks.start("kanmon-idle-"+mode+".log", "GODEBUG=gctrace=1")
	if err != nil {
		return r, err
	}
	defer kp.stop()
	warm, _, err := e.openSessions(t, 50, 8, "bench", 30*time.Second)
	closeAll(warm)
	if len(warm) == 0 {
		return r, fmt.Errorf("idle warm-up %s: %v", mode, err)
	}
	time.Sleep(time.Second)
	r.before = settleRSS(kp.pid())
	_, r.live0 = kp.gcTrace()
	r.g0 = scrape(ks.MetricsAddr)
	t0 := time.Now()
	conns, failed, firstErr := e.openSessions(t, o.idle, o.idleWorkers, "bench", 4*time.Minute)
	defer closeAll(conns)
	r.openTime = time.Since(t0)
	r.held, r.failed, r.firstErr = len(conns), failed, firstErr
	r.opened = settleRSS(kp.pid())
	r.dovecotPSS, r.dovecotProcs = groupPSSKiB(e.dovecotPGID)
	// Then one garbage collection, for the live heap: an idle kanmon
	// allocates nothing, so none would come soon (the periodic one waits
	// for an idle runtime's sysmon, minutes). Login cycles through this
	// kanmon make the garbage that brings the next one on.
	gcs, _ := kp.gcTrace()
	t1 := time.Now()
	var stop atomic.Bool
	var pump sync.WaitGroup
	for w := range 8 {
		pump.Add(1)
		go func() {
			defer pump.Done()
			for i := w; !stop.Load() && time.Since(t1) < o.gcWait; i += 8 {
				user := e.secrets.users[i%len(e.secrets.users)]
				_ = loginCycle(t, user, e.secrets.passcode(user, "bench"))
				r.pumpLogins.Add(1)
			}
		}()
	}
	for time.Since(t1) < o.gcWait {
		if n, _ := kp.gcTrace(); n > gcs {
			r.gcSeen = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop.Store(true)
	pump.Wait()
	r.gcWait = time.Since(t1)
	_, r.liveMB = kp.gcTrace()
	r.afterGC = settleRSS(kp.pid())
	r.g2 = scrape(ks.MetricsAddr)
	// A sample of the sessions must still work end to end.
	for i := 0; i < r.held; i += max(1, r.held/100) {
		if err := conns[i].stillIdle(); err != nil {
			r.sampleBad++
		}
	}
	return r, nil
}

func (e *benchEnv) idlePhase() error {
	o := e.o
	rep := e.rep
	modes := []struct {
		name   string
		tls    bool
		target float64
	}{{"plaintext", false, 10}, {"TLS", true, 20}}
	results := make([]*idleResult, len(modes))
	errs := make([]error, len(modes))
	var wg sync.WaitGroup
	for i, m := range modes {
		ks, err := e.idleSetup("idle-" + m.name)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.measureIdle(ks, m.name, m.tls, m.target)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	rep.idle = append(rep.idle,
		fmt.Sprintf("Each mode has its own fresh `kanmon serve`; the two modes run at the same time. Baseline: after 50 sessions of that mode were opened and closed, kanmon's VmRSS once steady (4 samples 0.5 s apart within 1%%). Then %d sessions are opened (LOGIN with a passcode, SELECT INBOX, IDLE; %d clients at once) and held, and VmRSS is read once steady (held). Then login cycles through the same kanmon (8 clients) make garbage until the Go runtime runs its next garbage collection (an idle kanmon allocates nothing, so none would come for minutes), and VmRSS is read once steady again (after GC: it includes that traffic's garbage, which the runtime keeps as free heap). Growth ÷ sessions held; the target is checked against the held figure. The live heap after that GC comes from kanmon's GODEBUG=gctrace=1 lines (MB resolution); goroutines, heap in use (live objects plus free space in spans in use) and stacks from its /metrics, read once at the end. Dovecot runs one imap process per session (its default, client_limit = 1).", o.idle, o.idleWorkers),
		"",
		"| mode | sessions held | open time | kanmon VmRSS baseline → held → after GC (MiB) | **RSS growth per session** (held) | target | RSS growth per session after GC | live heap per session after GC (gctrace) | Go stacks per session | goroutines per session | Go heap in use per session | Dovecot imap processes / PSS |",
		"|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		met := "met"
		if r.per(r.opened) > r.target {
			met = "missed"
		}
		n := float64(max(r.held, 1))
		gc := ""
		if !r.gcSeen {
			gc = " (no GC seen)"
		}
		rep.idle = append(rep.idle, fmt.Sprintf("| %s | %d of %d | %v | %.1f → %.1f → %.1f%s | **%.1f KiB** | ≤ %.0f KiB: %s | %.1f KiB | %.1f KiB | %.1f KiB | %.2f | %.1f KiB | %d / %.0f MiB |",
			r.mode, r.held, o.idle, r.openTime.Round(100*time.Millisecond), float64(r.before)/1024, float64(r.opened)/1024, float64(r.afterGC)/1024, gc,
			r.per(r.opened), r.target, met, r.per(r.afterGC), float64(r.liveMB-r.live0)*1024/n, (r.g2.stackInuse-r.g0.stackInuse)/1024/n,
			(r.g2.goroutines-r.g0.goroutines)/n, (r.g2.heapInuse-r.g0.heapInuse)/1024/n,
			r.dovecotProcs, float64(r.dovecotPSS)/1024))
		fmt.Printf("idle %s: %d held (%d failed) in %v; RSS %d → %d → %d KiB (GC after %v and %d login cycles, seen %v): %.1f KiB/session (%.1f before GC); goroutines %.0f → %.0f; heap %.0f → %.0f; stacks %.0f → %.0f; sample check failures %d\n",
			r.mode, r.held, r.failed, r.openTime, r.before, r.opened, r.afterGC, r.gcWait.Round(time.Second), r.pumpLogins.Load(), r.gcSeen, r.per(r.afterGC), r.per(r.opened),
			r.g0.goroutines, r.g2.goroutines, r.g0.heapInuse, r.g2.heapInuse, r.g0.stackInuse, r.g2.stackInuse, r.sampleBad)
		if r.failed > 0 || r.held < o.idle {
			rep.notes = append(rep.notes, fmt.Sprintf("- idle %s: %d sessions failed to open; first error: %v", r.mode, r.failed, r.firstErr))
		}
		if r.sampleBad > 0 {
			rep.notes = append(rep.notes, fmt.Sprintf("- idle %s: %d of the sampled sessions did not answer DONE/NOOP after the measurement", r.mode, r.sampleBad))
		}
	}
	return nil
}
