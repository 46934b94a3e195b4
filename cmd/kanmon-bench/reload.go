//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// reloadStep is one size the accounts file is grown to before a reload.
type reloadStep struct{ accounts, passcodes int }

func parseReloadSteps(s string) ([]reloadStep, error) {
	var steps []reloadStep
	for _, f := range strings.Split(s, ",") {
		a, p, ok := strings.Cut(strings.TrimSpace(f), ":")
		na, err1 := strconv.Atoi(a)
		np, err2 := strconv.Atoi(p)
		if !ok || err1 != nil || err2 != nil || na <= 0 || np < na {
			return nil, fmt.Errorf("bad -reload-steps entry %q: want ACCOUNTS:PASSCODES", f)
		}
		steps = append(steps, reloadStep{na, np})
	}
	return steps, nil
}

// growAccounts rewrites the accounts file once: the "phone" passcodes of
// the users in revoke removed, and staff accounts added (or given more
// passcodes) up to the step's totals. It returns the totals.
func (e *benchEnv) growAccounts(step reloadStep, revoke map[string]bool) (int, int, error) {
	pepper, err := auth.LoadOrCreatePepper(e.ks.Dir + "/state")
	if err != nil {
		return 0, 0, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	apps := []string{"Thunderbird", "iPhone", "Cybozu", "Outlook", "Android"}
	var accounts, passcodes int
	err = e.ks.store().Update(func(a *auth.Accounts) error {
		for i := range a.Accounts {
			acct := &a.Accounts[i]
			if revoke[acct.User] {
				kept := acct.Passcodes[:0]
				for _, p := range acct.Passcodes {
					if p.App != "phone" {
						kept = append(kept, p)
					}
				}
				acct.Passcodes = kept
			}
		}
		extra := step.accounts - len(a.Accounts)
		need := step.passcodes - a.NumPasscodes()
		if extra < 0 || need < extra {
			return fmt.Errorf("reload: cannot reach %d accounts / %d passcodes from %d / %d", step.accounts, step.passcodes, len(a.Accounts), a.NumPasscodes())
		}
		first := len(a.Accounts)
		for i := range extra {
			a.Accounts = append(a.Accounts, auth.Account{User: fmt.Sprintf("staff%06d", first+i+1), Enabled: now})
		}
		// Hand the passcodes still needed out over the new accounts,
		// at least one each, the rest evenly.
		for k := 0; k < need; k++ {
			var acct *auth.Account
			if extra > 0 {
				acct = &a.Accounts[first+k%extra]
			} else {
				acct = &a.Accounts[len(a.Accounts)-1-k%max(1, len(a.Accounts)-len(e.secrets.users)-1)]
			}
			_, hash, err := newPasscode(pepper)
			if err != nil {
				return err
			}
			j := len(acct.Passcodes)
			acct.Passcodes = append(acct.Passcodes, auth.AppPasscode{App: apps[j%len(apps)] + strconv.Itoa(j/len(apps)+1), Created: now, Hash: hash})
		}
		accounts, passcodes = len(a.Accounts), a.NumPasscodes()
		return nil
	})
	return accounts, passcodes, err
}

// timedReload runs `kanmon reload -config FILE` and returns its round
// trip. The CLI gives up after 30 s (the admin socket's request timeout)
// while the server goes on; then the time is the one until the server
// logs "reloaded", watched for up to limit.
func (e *benchEnv) timedReload(before int, limit time.Duration) (time.Duration, bool, error) {
	t := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.ks.bin, "reload", "-config", e.ks.ConfigPath).CombinedOutput()
	if err == nil {
		return time.Since(t), true, nil
	}
	if !strings.Contains(string(out), "deadline") && !strings.Contains(string(out), "timeout") && ctx.Err() == nil {
		return 0, false, fmt.Errorf("kanmon reload: %v: %s", err, out)
	}
	for time.Since(t) < limit {
		if e.kp.logCount("msg=reloaded") > before {
			return time.Since(t), true, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(t), false, nil
}

func (e *benchEnv) reloadPhase() error {
	o := e.o
	rep := e.rep
	users := e.secrets.users
	steps, err := parseReloadSteps(o.reloadSteps)
	if err != nil {
		return err
	}
	phone, err := e.ks.addPasscodes(users, []string{"phone"})
	if err != nil {
		return err
	}
	for k, v := range phone {
		e.secrets.codes[k] = v
	}
	kp, err := e.ks.start("kanmon-reload.log")
	if err != nil {
		return err
	}
	e.kp = kp
	defer kp.stop()

	// One "bench" and one "phone" session per user (openSessions hands
	// the users out in turn).
	n := len(users)
	benchConns, _, err1 := e.openSessions(e.tg.kanmonPlain, n, 16, "bench", time.Minute)
	phoneConns, _, err2 := e.openSessions(e.tg.kanmonPlain, n, 16, "phone", time.Minute)
	defer closeAll(benchConns)
	defer closeAll(phoneConns)
	if len(benchConns) != n || len(phoneConns) != n {
		return fmt.Errorf("reload: opened %d + %d of %d + %d sessions: %v %v", len(benchConns), len(phoneConns), n, n, err1, err2)
	}
	revoke := map[string]bool{}
	for _, u := range users[:n/2] {
		revoke[u] = true
	}
	// The "phone" sessions are checked after the first step (the revoked
	// ones must be closed, the others alive) and all sessions at the end.
	rep.reload = append(rep.reload,
		fmt.Sprintf("A fresh `kanmon serve` with %d accounts (%d passcodes) holds %d plaintext IDLE sessions, one on each user's \"bench\" passcode and one on their \"phone\" passcode. For each step the accounts file is rewritten with more accounts and passcodes (the first step also removes the \"phone\" passcodes of user1..user%d), and `kanmon reload -config FILE` is timed: a new process that loads the config and asks the server over the admin socket; the server re-reads the config and the accounts, builds the new policy, swaps it in and closes the sessions whose passcode is gone, then answers. The CLI gives up after 30 s (the admin socket's timeout); then the time is until the server logs `reloaded`, watched for up to %v. Each step that took under 10 s is reloaded once more, unchanged.", n+1, 2*n+1, 2*n, n/2, o.reloadTimeout),
		"",
		"| accounts | passcodes | file | reload round trip | again, unchanged | kanmon VmRSS after | Go heap in use after | target < 1 s |",
		"|---|---|---|---|---|---|---|---|")
	base := settleRSS(kp.pid())
	g0 := scrape(e.ks.MetricsAddr)
	rep.reload = append(rep.reload, fmt.Sprintf("| %d | %d | | (start) | | %.1f MiB | %.1f MiB | |", n+1, 2*n+1, float64(base)/1024, g0.heapInuse/(1<<20)))
	revokedChecked := false
	phoneDead, phoneRevokedDead := 0, 0
	finished := true
	for i, step := range steps {
		var rv map[string]bool
		if i == 0 {
			rv = revoke
		}
		accounts, passcodes, err := e.growAccounts(step, rv)
		if err != nil {
			return err
		}
		fi, _ := os.Stat(e.ks.store().Path())
		logged := kp.logCount("msg=reloaded")
		took, done, err := e.timedReload(logged, o.reloadTimeout)
		if err != nil {
			return err
		}
		if !done {
			finished = false
			rep.reload = append(rep.reload, fmt.Sprintf("| %d | %d | %.1f MiB | **not done after %v** | | | | missed |", accounts, passcodes, float64(fi.Size())/(1<<20), took.Round(time.Second)))
			fmt.Printf("reload %d/%d: not done after %v\n", accounts, passcodes, took)
			break
		}
		again := time.Duration(-1) // not repeated when it took long
		if took < 10*time.Second {
			if again, _, err = e.timedReload(logged+1, o.reloadTimeout); err != nil {
				return err
			}
		}
		time.Sleep(500 * time.Millisecond)
		rss := settleRSS(kp.pid())
		g := scrape(e.ks.MetricsAddr)
		met := "met"
		if took > time.Second {
			met = "missed"
		}
		againText := "(skipped)"
		if again >= 0 {
			againText = again.Round(time.Millisecond).String()
		}
		rep.reload = append(rep.reload, fmt.Sprintf("| %d | %d | %.1f MiB | **%v** | %s | %.1f MiB | %.1f MiB | %s |",
			accounts, passcodes, float64(fi.Size())/(1<<20), took.Round(time.Millisecond), againText, float64(rss)/1024, g.heapInuse/(1<<20), met))
		fmt.Printf("reload %d/%d: %v, again %v, RSS %d KiB\n", accounts, passcodes, took, again, rss)
		if !revokedChecked {
			revokedChecked = true
			for _, c := range phoneConns {
				if c.stillIdle() != nil {
					phoneDead++
					if revoke[c.user] {
						phoneRevokedDead++
					}
				}
			}
		}
	}
	benchAlive := 0
	for _, c := range benchConns {
		if c.stillIdle() == nil {
			benchAlive++
		}
	}
	// The phone sessions that survived the first step must still live.
	phoneAliveEnd := 0
	for _, c := range phoneConns {
		alive := c.stillIdle
		if revokedChecked {
			// Out of IDLE since the first check.
			alive = func() error { _, err := c.cmd("n2", "NOOP"); return err }
		}
		if !revoke[c.user] && alive() == nil {
			phoneAliveEnd++
		}
	}
	revokedLog := kp.logCount("revoked=true")
	verdict := "no session was dropped except the revoked ones"
	if benchAlive != n || phoneRevokedDead != n/2 || phoneDead != n/2 || phoneAliveEnd != n-n/2 {
		verdict = "UNEXPECTED: see the counts"
	}
	if !finished {
		verdict += " (up to the last step that finished)"
	}
	rep.reload = append(rep.reload, "",
		fmt.Sprintf("- Sessions: after the first step %d of the %d \"phone\" sessions were closed (%d of them on a removed passcode); at the end %d of %d \"bench\" sessions and %d of the %d remaining \"phone\" sessions answer DONE and NOOP; kanmon logged %d sessions ended as revoked: %s.",
			phoneDead, n, phoneRevokedDead, benchAlive, n, phoneAliveEnd, n-n/2, revokedLog, verdict))
	fmt.Printf("reload sessions: phone closed %d (revoked %d), bench alive %d/%d, phone alive at end %d/%d, revoked in log %d\n",
		phoneDead, phoneRevokedDead, benchAlive, n, phoneAliveEnd, n-n/2, revokedLog)
	return nil
}
