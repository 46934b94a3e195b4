//go:build unix

package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// loginResult is one timed login-rate run.
type loginResult struct {
	ok, failed int64
	firstErr   error
	elapsed    time.Duration
	kanmonCPU  time.Duration // kanmon runs only
	dovecotCPU time.Duration
	clientCPU  time.Duration
}

func (r loginResult) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

// maxFailures ends a run early: something is wrong, not slow.
const maxFailures = 1000

// runLogins runs conc clients doing connect, LOGIN, LOGOUT cycles against
// t for dur (and at most maxCycles cycles in all), over the users in turn.
func (e *benchEnv) runLogins(t target, conc int, dur time.Duration, maxCycles int64) loginResult {
	var ok, failed, next atomic.Int64
	var errOnce sync.Once
	var firstErr error
	users := e.secrets.users
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && failed.Load() < maxFailures {
				i := next.Add(1)
				if i > maxCycles {
					return
				}
				user := users[int(i)%len(users)]
				if err := loginCycle(t, user, e.secretFor(t, user, "bench")); err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return loginResult{ok: ok.Load(), failed: failed.Load(), firstErr: firstErr, elapsed: time.Since(start)}
}

// measureLogins is runLogins with the CPU of kanmon, Dovecot and this
// client read before and after.
func (e *benchEnv) measureLogins(t target, conc int, dur time.Duration) loginResult {
	k0, _ := procCPU(e.kp.pid())
	d0 := groupCPU(e.dovecotPGID)
	c0 := selfCPU()
	r := e.runLogins(t, conc, dur, 1_000_000)
	k1, _ := procCPU(e.kp.pid())
	r.kanmonCPU = k1 - k0
	r.dovecotCPU = groupCPU(e.dovecotPGID) - d0
	r.clientCPU = selfCPU() - c0
	return r
}

func (e *benchEnv) loginPhase() error {
	o := e.o
	rep := e.rep
	rep.login = append(rep.login,
		fmt.Sprintf("Each cycle: connect (and a full TLS 1.3 handshake), LOGIN, LOGOUT, over user1..user%d in turn. Direct: the user's password at Dovecot. Via kanmon: the user's passcode; kanmon logs in at Dovecot with the master user (SASL PLAIN). Each run: %v after a 1 s warm-up; direct and kanmon alternate. CPU per login = process CPU (utime+stime) ÷ logins.", o.users, o.loginDur),
		"",
		"| mode | conc | Dovecot direct logins/s | via kanmon logins/s | **ratio** (target ≥ 0.85) | kanmon CPU µs/login | Dovecot CPU µs/login direct → via kanmon | failures direct / kanmon |",
		"|---|---|---|---|---|---|---|---|")
	for _, mode := range []struct {
		name           string
		direct, kanmon target
	}{
		{"plaintext", e.tg.directPlain, e.tg.kanmonPlain},
		{"TLS", e.tg.directTLS, e.tg.kanmonTLS},
	} {
		for _, conc := range o.concurrency {
			e.runLogins(mode.direct, conc, time.Second, 100_000)
			d := e.measureLogins(mode.direct, conc, o.loginDur)
			e.runLogins(mode.kanmon, conc, time.Second, 100_000)
			k := e.measureLogins(mode.kanmon, conc, o.loginDur)
			ratio := k.rate() / d.rate()
			met := "met"
			if ratio < 0.85 {
				met = "missed"
			}
			us := func(cpu time.Duration, n int64) float64 {
				if n == 0 {
					return 0
				}
				return float64(cpu.Microseconds()) / float64(n)
			}
			rep.login = append(rep.login, fmt.Sprintf("| %s | %d | %.0f | %.0f | **%.2f** (%s) | %.0f | %.0f → %.0f | %d / %d |",
				mode.name, conc, d.rate(), k.rate(), ratio, met, us(k.kanmonCPU, k.ok),
				us(d.dovecotCPU, d.ok), us(k.dovecotCPU, k.ok), d.failed, k.failed))
			fmt.Printf("login %s conc %d: direct %.0f/s (%d ok, %d failed, client CPU %v), kanmon %.0f/s (%d ok, %d failed, kanmon CPU %v, client CPU %v), ratio %.2f\n",
				mode.name, conc, d.rate(), d.ok, d.failed, d.clientCPU, k.rate(), k.ok, k.failed, k.kanmonCPU, k.clientCPU, ratio)
			for _, r := range []loginResult{d, k} {
				if r.firstErr != nil {
					rep.notes = append(rep.notes, fmt.Sprintf("- login %s conc %d: first error: %v", mode.name, conc, r.firstErr))
				}
			}
		}
	}
	return nil
}
