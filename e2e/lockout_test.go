package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/lockout"
)

// The lockout stories of issue 4, against the real Dovecot. Client IPs:
// 127.0.0.0/8 is all loopback on Linux, so a test picks its client's
// address with the dialer's LocalAddr. 127.0.0.1 is the campus (trusted
// by default) and, once logged in, a known-good IP; 127.0.0.2 and up are
// attackers or fresh clients.
//
// Where a test needs a lock to trip at an exact count, it lengthens that
// scope's window: a counter's window is two fixed buckets aligned to
// multiples of the window, and a failure series that straddles a bucket
// boundary is estimated one short. With a 720h window that can only
// happen at a 30-day boundary, not once in a few hundred test runs.

// dialIMAPSFrom connects to an implicit-TLS IMAP listener at addr from the
// local address ip and reads the greeting.
func dialIMAPSFrom(t *testing.T, addr string, conf *tls.Config, ip string) *rawIMAP {
	t.Helper()
	r := &rawIMAP{lineFrom(t, addr, ip, nil, conf)}
	r.greeting("* OK ")
	return r
}

// loginAt makes one LOGIN on a fresh connection from ip and returns the
// tagged reply without the tag.
func loginAt(t *testing.T, addr string, conf *tls.Config, ip, user, secret string) string {
	t.Helper()
	r := dialIMAPSFrom(t, addr, conf, ip)
	defer r.conn.Close()
	return r.cmd(fmt.Sprintf("a1 LOGIN %s %q", user, secret))
}

// loginFrom is loginAt against an in-process kanmon.
func loginFrom(t *testing.T, k *kanmontest.Kanmon, ip, user, secret string) string {
	t.Helper()
	return loginAt(t, k.IMAPS, k.ClientTLS, ip, user, secret)
}

// wantFailed fails unless reply is the uniform failed-login reply.
func wantFailed(t *testing.T, what, reply string) {
	t.Helper()
	if reply != failedReply {
		t.Fatalf("%s: S: a1 %s\nwant: a1 %s", what, reply, failedReply)
	}
}

// wantOK fails unless reply is a successful login.
func wantOK(t *testing.T, what, reply string) {
	t.Helper()
	if !strings.HasPrefix(reply, "OK ") {
		t.Fatalf("%s: S: a1 %s (want OK)", what, reply)
	}
}

// wrongPasscode returns the i-th of a series of distinct passcode-shaped
// (16 upper-case letters) wrong secrets.
func wrongPasscode(i int) string {
	b := []byte("WRONGPASSCODEAAA")
	for j := len(b) - 1; i > 0; j-- {
		b[j] = 'A' + byte(i%26)
		i /= 26
	}
	return string(b)
}

// countLogLines counts the lines of log that contain every one of parts.
func countLogLines(log string, parts ...string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(l, p) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// dovecotAuthFailures counts Dovecot's failed passdb lookups for user: with
// auth_verbose = yes its auth process logs one line per failed password
// check, "passwd-file(USER,IP,<session>): Password mismatch" or
// "...: unknown user".
func dovecotAuthFailures(log, user string) int {
	prefix := "passwd-file(" + user + ","
	return countLogLines(log, prefix, "Password mismatch") + countLogLines(log, prefix, "unknown user")
}

// kanmonFailures counts kanmon's "login failed" lines for user from ip
// whose reason is reason (any reason if empty).
func kanmonFailures(log, ip, user, reason string) int {
	parts := []string{`msg="login failed"`, "client=" + ip + " ", "user=" + user + " "}
	if reason != "" {
		parts = append(parts, fmt.Sprintf("reason=%q", reason))
	}
	return countLogLines(log, parts...)
}

// Issue 4: 200 logins with the same wrong password for a passthrough
// account. Dovecot checks it once; the other 199 are refused by kanmon as
// a repeated stale secret, so a misconfigured client can never drive the
// backend's own lockout. carol's right password works right after.
func TestE2ELockoutStalePasswordReachesDovecotOnce(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	k := w.kanmon
	for i := range 200 {
		wantFailed(t, fmt.Sprintf("attempt %d", i+1), loginFrom(t, k, "127.0.0.1", "carol", "carol-old-password"))
	}
	wantOK(t, "carol's right password", loginFrom(t, k, "127.0.0.1", "carol", carolPassword))

	// Dovecot logs the successful login after every earlier failure.
	waitFor(t, 5*time.Second, "Dovecot to log carol's login", func() bool {
		return strings.Contains(w.dovecot.Log(), "Login: user=<carol>")
	})
	dlog := w.dovecot.Log()
	if n := dovecotAuthFailures(dlog, "carol"); n != 1 {
		t.Errorf("Dovecot's auth process logged %d failed password checks for carol, want exactly 1 (the first attempt)", n)
	}
	if n := countLogLines(dlog, "auth failed", "user=<carol>"); n != 1 {
		t.Errorf("Dovecot's imap-login logged %d failed logins for carol, want 1", n)
	}
	klog := k.Logs()
	if n := kanmonFailures(klog, "127.0.0.1", "carol", "repeated stale secret"); n != 199 {
		t.Errorf("kanmon refused %d attempts as a repeated stale secret, want 199", n)
	}
	if n := countLogLines(klog, "user=carol", "lockout.counted=true"); n != 1 {
		t.Errorf("kanmon counted %d failures for carol, want 1", n)
	}
	if locks := k.Guard.List(); len(locks) != 0 {
		t.Errorf("locks after one counted failure: %v", locks)
	}
}

// Issue 4: 50 distinct wrong passcodes for alice from one IP lock that IP
// for alice: the 51st wrong one is refused as locked, with the uniform
// reply. Issue 18: her RIGHT passcode still logs in, from the attacking IP
// and from a fresh one, under any lock: a lock refuses wrong secrets only.
//
// With the default thresholds the (account, IP) lock trips at the 10th
// failure. With it and the IP threshold raised, the account-wide threshold
// (50) trips at the 50th: then a fresh IP's wrong passcode is refused as
// locked too.
func TestE2ELockoutBruteForceLocksAccountIP(t *testing.T) {
	for _, tc := range []struct {
		name, lockoutBody, scope string
	}{
		{"defaults", kanmontest.DefaultLockout, "account+ip"},
		{"account threshold", kanmontest.DefaultLockout + "account_ip_threshold = 1000\nip_threshold = 1000\naccount_window = \"720h\"\n", "account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startWorld(t, kanmontest.Options{Lockout: tc.lockoutBody})
			k := w.kanmon
			passcode := k.Passcode("alice", "Thunderbird")
			wantOK(t, "alice from her usual IP", loginFrom(t, k, "127.0.0.1", "alice", passcode))

			for i := range 50 {
				wantFailed(t, fmt.Sprintf("wrong passcode %d", i+1), loginFrom(t, k, "127.0.0.2", "alice", wrongPasscode(i)))
			}
			wantFailed(t, "a 51st wrong passcode from the attacking IP", loginFrom(t, k, "127.0.0.2", "alice", wrongPasscode(50)))
			klog := k.Logs()
			if n := kanmonFailures(klog, "127.0.0.2", "alice", "locked: "+tc.scope); n == 0 {
				t.Fatalf("no failure from 127.0.0.2 logged as locked: %s", tc.scope)
			}
			if !strings.Contains(klog, "lockout.locked="+tc.scope) {
				t.Errorf("no failure line says it started the %s lock", tc.scope)
			}
			found := false
			for _, e := range k.Guard.List() {
				found = found || e.Scope.String() == tc.scope && e.User == "alice"
			}
			if !found {
				t.Errorf("kanmon lockout list lacks the %s lock on alice: %v", tc.scope, k.Guard.List())
			}
			if tc.scope == "account" {
				// A fresh IP's wrong passcode meets the account lock...
				wantFailed(t, "a wrong passcode from a fresh IP", loginFrom(t, k, "127.0.0.3", "alice", wrongPasscode(51)))
				if n := kanmonFailures(k.Logs(), "127.0.0.3", "alice", "locked: account"); n != 1 {
					t.Errorf("the fresh IP's refusal is not logged as locked: account")
				}
			}
			// ...and her right passcode passes every lock.
			wantOK(t, "alice from a fresh IP", loginFrom(t, k, "127.0.0.4", "alice", passcode))
			wantOK(t, "alice from her known-good IP after the attack", loginFrom(t, k, "127.0.0.1", "alice", passcode))
			wantOK(t, "the right passcode from the attacking IP", loginFrom(t, k, "127.0.0.2", "alice", passcode))
		})
	}
}

// Issue 4: spraying one password over 100 accounts from one IP locks the
// IP. The sprayer is outside trusted_networks with require_2fa_outside
// off, so kanmon asks Dovecot, which rejects the unknown users; after
// ip_threshold (30) failures the IP is locked and Dovecot hears no more of
// it. Then carol, who never logged in from that IP, is refused there with
// her right password, and logs in from another IP.
//
// Issue 18: from inside trusted_networks (the campus NAT) the same spray
// neither counts nor locks the address: carol logs in there.
func TestE2ELockoutSprayLocksIP(t *testing.T) {
	t.Run("outside the campus", func(t *testing.T) {
		w := startWorld(t, kanmontest.Options{
			TrustedNetworks: []string{"127.0.0.1/32"},
			AllowOutside:    true,
			Lockout:         kanmontest.DefaultLockout + "ip_window = \"720h\"\n",
		})
		k := w.kanmon
		for i := range 100 {
			wantFailed(t, fmt.Sprintf("spray %d", i+1), loginFrom(t, k, "127.0.0.2", fmt.Sprintf("spray%03d", i), "Spring2026"))
		}
		wantFailed(t, "carol from the spraying IP", loginFrom(t, k, "127.0.0.2", "carol", carolPassword))
		if n := kanmonFailures(k.Logs(), "127.0.0.2", "carol", "locked: ip"); n != 1 {
			t.Fatalf("carol's refusal at the spraying IP is not logged as locked: ip")
		}
		wantOK(t, "carol from another IP", loginFrom(t, k, "127.0.0.3", "carol", carolPassword))

		waitFor(t, 5*time.Second, "Dovecot to log carol's login", func() bool {
			return strings.Contains(w.dovecot.Log(), "Login: user=<carol>")
		})
		dlog := w.dovecot.Log()
		threshold := k.Guard.Options().IPThreshold
		if n := countLogLines(dlog, "passwd-file(spray", "unknown user"); n != threshold {
			t.Errorf("Dovecot checked %d sprayed logins, want ip_threshold = %d", n, threshold)
		}
		if n := countLogLines(dlog, "user=<carol>"); n != 1 {
			t.Errorf("Dovecot saw carol %d times, want once (the login from the other IP)", n)
		}
		if locks := k.Guard.List(); len(locks) != 1 || locks[0].Scope != lockout.ScopeIP || locks[0].IP.String() != "127.0.0.2" {
			t.Errorf("locks: %v, want only ip 127.0.0.2", locks)
		}
	})
	t.Run("campus NAT", func(t *testing.T) {
		w := startWorld(t, kanmontest.Options{
			TrustedNetworks: []string{"127.0.0.0/8"},
			Lockout:         kanmontest.DefaultLockout + "ip_window = \"720h\"\n",
		})
		k := w.kanmon
		for i := range 40 {
			wantFailed(t, fmt.Sprintf("spray %d", i+1), loginFrom(t, k, "127.0.0.2", fmt.Sprintf("spray%03d", i), "Spring2026"))
		}
		wantOK(t, "carol at the campus NAT address after the spray", loginFrom(t, k, "127.0.0.2", "carol", carolPassword))
		if locks := k.Guard.List(); len(locks) != 0 {
			t.Errorf("locks after a campus spray: %v, want none", locks)
		}
		if n := countLogLines(k.Logs(), "client=127.0.0.2", "lockout.ip=0 lockout.prefix=0"); n != 40 {
			t.Errorf("%d of the 40 campus failures left the ip and prefix counts at 0", n)
		}
	})
}

// Issue 4, no oracle: a locked login gets the same reply, byte for byte, as
// a wrong one (a wrong passcode, a wrong passthrough password Dovecot
// rejected), after the same tarpit delay; for LOGIN and AUTHENTICATE PLAIN.
func TestE2ELockoutNoOracle(t *testing.T) {
	const tarpit = 100 * time.Millisecond
	w := startWorld(t, kanmontest.Options{
		TrustedNetworks: []string{"127.0.0.0/8"},
		Lockout:         fmt.Sprintf("tarpit = %q\ntarpit_max = %q\naccount_ip_threshold = 3\naccount_ip_window = \"720h\"\n", tarpit, tarpit),
	})
	k := w.kanmon
	passcode := k.Passcode("alice", "Thunderbird")
	plain := func(user, secret string) string {
		return "a1 AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+secret))
	}
	// exchange sends one command on a fresh connection and returns the raw
	// bytes of everything up to and including the tagged reply's CRLF.
	exchange := func(ip, line string) ([]byte, time.Duration) {
		t.Helper()
		r := dialIMAPSFrom(t, k.IMAPS, k.ClientTLS, ip)
		defer r.conn.Close()
		start := time.Now()
		r.writeLine(line)
		var raw []byte
		for {
			l, err := r.br.ReadBytes('\n')
			raw = append(raw, l...)
			if err != nil {
				t.Fatalf("reading the reply to %q: %v (got %q)", line, err, raw)
			}
			if bytes.HasPrefix(l, []byte("a1 ")) {
				return raw, time.Since(start)
			}
		}
	}

	type result struct {
		what  string
		raw   []byte
		delay time.Duration
	}
	var results []result
	add := func(what, ip, line string) {
		raw, d := exchange(ip, line)
		results = append(results, result{what, raw, d})
	}
	add("LOGIN wrong passcode", "127.0.0.2", "a1 LOGIN alice "+wrongPasscode(0))
	add("LOGIN wrong password, rejected by Dovecot", "127.0.0.2", `a1 LOGIN carol "wrong-password"`)
	add("AUTHENTICATE wrong passcode", "127.0.0.2", plain("alice", wrongPasscode(1)))
	add("LOGIN wrong passcode, locking", "127.0.0.2", "a1 LOGIN alice "+wrongPasscode(2))
	add("LOGIN wrong passcode, locked", "127.0.0.2", "a1 LOGIN alice "+wrongPasscode(3))
	add("AUTHENTICATE wrong passcode, locked", "127.0.0.2", plain("alice", wrongPasscode(4)))
	if n := kanmonFailures(k.Logs(), "127.0.0.2", "alice", "locked: account+ip"); n != 2 {
		t.Fatalf("%d attempts logged as locked: account+ip, want 2", n)
	}
	want := []byte("a1 " + failedReply + "\r\n")
	for _, r := range results {
		if !bytes.Equal(r.raw, want) {
			t.Errorf("%s: S: %q\nwant: %q", r.what, r.raw, want)
		}
		if r.delay < tarpit {
			t.Errorf("%s: answered after %v, before the %v tarpit", r.what, r.delay, tarpit)
		}
	}
	if t.Failed() {
		return
	}
	// The right passcode works, from elsewhere and under the lock (issue
	// 18: a lock refuses wrong secrets only).
	wantOK(t, "alice from another IP", loginFrom(t, k, "127.0.0.3", "alice", passcode))
	wantOK(t, "alice from the locked IP", loginFrom(t, k, "127.0.0.2", "alice", passcode))
}

// Issue 4, stale client: a client repeating a revoked passcode 20 times is
// counted once; alice is not locked (the (account, IP) threshold is 10) and
// her right passcode works from the same IP.
func TestE2ELockoutStaleClientCountsOnce(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	k := w.kanmon
	for i := range 20 {
		wantFailed(t, fmt.Sprintf("stale passcode %d", i+1), loginFrom(t, k, "127.0.0.2", "alice", "STALEPASSCODEXYZ"))
	}
	klog := k.Logs()
	if n := countLogLines(klog, "client=127.0.0.2 user=alice", "lockout.counted=true"); n != 1 {
		t.Errorf("%d failures counted, want 1", n)
	}
	if n := kanmonFailures(klog, "127.0.0.2", "alice", "repeated stale secret"); n != 19 {
		t.Errorf("%d attempts logged as a repeated stale secret, want 19", n)
	}
	if v := k.Guard.Check("alice", netip.MustParseAddr("127.0.0.2"), ""); v.Outcome != lockout.Allow {
		t.Errorf("guard says %q for alice at 127.0.0.2, want allowed", v)
	}
	if locks := k.Guard.List(); len(locks) != 0 {
		t.Errorf("locks: %v", locks)
	}
	wantOK(t, "alice's right passcode from the stale client's IP", loginFrom(t, k, "127.0.0.2", "alice", k.Passcode("alice", "Thunderbird")))
}

// Issue 4, fail closed: when the lockout database can't be trusted, logins
// get NO [UNAVAILABLE], never an open door, and Dovecot is not asked.
func TestE2ELockoutFailsClosed(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	k := w.kanmon
	wantOK(t, "before", loginFrom(t, k, "127.0.0.1", "alice", k.Passcode("alice", "Thunderbird")))
	if err := k.Guard.Close(); err != nil { // the database goes away underneath the server
		t.Fatal(err)
	}
	for _, tc := range []struct{ user, secret string }{
		{"alice", k.Passcode("alice", "Thunderbird")},
		{"carol", carolPassword},
		{"carol", "wrong-password"},
	} {
		if got := loginFrom(t, k, "127.0.0.1", tc.user, tc.secret); !strings.HasPrefix(got, "NO [UNAVAILABLE]") {
			t.Errorf("%s with the lockout database down: S: a1 %s (want NO [UNAVAILABLE])", tc.user, got)
		}
	}
	if !strings.Contains(k.Logs(), "lockout state unavailable") {
		t.Errorf("kanmon did not log why it refused")
	}
	if strings.Contains(w.dovecot.Log(), "carol") {
		t.Errorf("Dovecot was asked about carol although the lockout state was unavailable:\n%s", w.dovecot.Log())
	}
}

// serveSetup is a config for the real `kanmon serve` in front of a Dovecot.
type serveSetup struct {
	*kanmontest.Files
	bin      string
	passcode string // alice's Thunderbird passcode
}

// setupServe builds kanmon, writes a config with an implicit-TLS IMAP
// listener in front of dc, a 1 ms tarpit and lockoutExtra in [lockout],
// and gives alice 2FA with a Thunderbird passcode through the CLI.
func setupServe(t *testing.T, dc *dovecottest.Server, lockoutExtra string) *serveSetup {
	t.Helper()
	s := &serveSetup{bin: buildKanmon(t), Files: serveFiles(t, dc, kanmontest.Options{Lockout: kanmontest.DefaultLockout + lockoutExtra})}
	mustRun(t, s.bin, "2fa", "enable", "-config", s.ConfigPath, "alice")
	s.passcode = cliAddPasscode(t, s.bin, "-config", s.ConfigPath, "alice", "Thunderbird")
	return s
}

// start runs `kanmon serve` and waits until it accepts connections. The
// process is killed at cleanup.
func (s *serveSetup) start(t *testing.T) *serveProcess {
	t.Helper()
	return startServe(t, s.bin, s.ConfigPath, s.IMAPS)
}

// Issue 4, persistence: the real binary locks alice at 127.0.0.2, is
// killed with SIGKILL (mid-storm: another client keeps failing logins),
// and a restarted kanmon on the same state_dir still enforces the lock (a
// wrong passcode is refused as locked: account+ip) and lists it; `kanmon
// lockout clear alice` lifts it.
func TestE2ELockoutSurvivesKill9(t *testing.T) {
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	s := setupServe(t, dc, "account_ip_window = \"720h\"\n")
	p := s.start(t)

	// Background storm on other accounts from another IP until the kill.
	stop := make(chan struct{})
	stormDone := make(chan struct{})
	go func() {
		defer close(stormDone)
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c, err := tls.DialWithDialer(d, "tcp", s.IMAPS, s.ClientTLS)
			if err != nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			br := bufio.NewReader(c)
			_, _ = br.ReadString('\n')
			_, _ = fmt.Fprintf(c, "a1 LOGIN storm%d %s\r\n", i%50, wrongPasscode(i))
			_, _ = br.ReadString('\n')
			c.Close()
		}
	}()

	for i := range 10 { // account_ip_threshold
		wantFailed(t, fmt.Sprintf("wrong passcode %d", i+1), loginAt(t, s.IMAPS, s.ClientTLS, "127.0.0.2", "alice", wrongPasscode(i)))
	}
	wantFailed(t, "a wrong passcode while locked", loginAt(t, s.IMAPS, s.ClientTLS, "127.0.0.2", "alice", wrongPasscode(10)))
	if list := mustRun(t, s.bin, "lockout", "list", "-config", s.ConfigPath); !strings.Contains(list, "account+ip alice 127.0.0.2 ") {
		t.Fatalf("lockout list before the kill:\n%s", list)
	}
	time.Sleep(3 * lockout.MaxBatchDelay) // the batch window, with room for the write itself
	p.kill9(t)
	close(stop)
	<-stormDone

	p = s.start(t)
	wantFailed(t, "a wrong passcode after the restart", loginAt(t, s.IMAPS, s.ClientTLS, "127.0.0.2", "alice", wrongPasscode(11)))
	waitFor(t, 5*time.Second, "the restarted kanmon to log the refusal as locked: account+ip", func() bool {
		return strings.Contains(p.log.String(), `client=127.0.0.2 user=alice reason="locked: account+ip"`)
	})
	if list := mustRun(t, s.bin, "lockout", "list", "-config", s.ConfigPath); !strings.Contains(list, "account+ip alice 127.0.0.2 ") {
		t.Fatalf("lockout list after the restart:\n%s", list)
	}
	if out := mustRun(t, s.bin, "lockout", "clear", "-config", s.ConfigPath, "alice"); !strings.Contains(out, "Cleared") {
		t.Errorf("lockout clear: %s", out)
	}
	wantOK(t, "right passcode after lockout clear", loginAt(t, s.IMAPS, s.ClientTLS, "127.0.0.2", "alice", s.passcode))
	if list := mustRun(t, s.bin, "lockout", "list", "-config", s.ConfigPath); !strings.Contains(list, "No locks in force.") {
		t.Errorf("lockout list after clear:\n%s", list)
	}
}

// Issue 4: all of an account's remembered wrong secrets are dropped when
// its 2FA state changes. While alice has 2FA, her account password is a
// wrong secret (remembered: the second try is a "repeated stale secret").
// After `kanmon 2fa disable` and `kanmon reload` it is her right
// password, and from the campus it passes through to Dovecot at once.
func TestE2ELockoutTwoFADisableForgetsStaleSecrets(t *testing.T) {
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	s := setupServe(t, dc, "")
	p := s.start(t)
	for range 2 {
		wantFailed(t, "alice's account password with 2FA on", loginAt(t, s.IMAPS, s.ClientTLS, "127.0.0.1", "alice", alicePassword))
	}
	waitFor(t, 5*time.Second, "kanmon to log the account password as refused, then as a repeated stale secret", func() bool {
		log := p.log.String()
		return strings.Contains(log, fmt.Sprintf("user=alice reason=%q", auth.ReasonNotPasscode)) &&
			strings.Contains(log, `user=alice reason="repeated stale secret"`)
	})

	mustRun(t, s.bin, "2fa", "disable", "-config", s.ConfigPath, "alice")
	mustRun(t, s.bin, "reload", "-config", s.ConfigPath)
	wantOK(t, "alice's account password after 2fa disable", loginAt(t, s.IMAPS, s.ClientTLS, "127.0.0.1", "alice", alicePassword))
	waitFor(t, 5*time.Second, "kanmon to log alice's passthrough login", func() bool {
		return strings.Contains(p.log.String(), "user=alice via=passthrough")
	})
}

// Issue 18: 60 wrong passcodes for alice from 20 other addresses lock her
// account for new addresses, yet her right passcode logs in from an
// address she never used, and from her known-good one; a wrong passcode
// from a new address is still refused as locked.
func TestE2ELockoutRightPasscodeFromANewAddress(t *testing.T) {
	w, passcode := aliceKnownGood(t)
	k := w.kanmon
	for i := range 60 {
		wantFailed(t, fmt.Sprintf("wrong passcode %d", i+1), loginFrom(t, k, fmt.Sprintf("127.0.1.%d", 1+i%20), "alice", wrongPasscode(i)))
	}
	if !strings.Contains(k.Logs(), `user=alice reason="locked: account"`) {
		t.Fatal("60 wrong passcodes from 20 addresses did not lock the account")
	}
	wantFailed(t, "a wrong passcode from a new address", loginFrom(t, k, "127.0.2.1", "alice", wrongPasscode(60)))
	if n := kanmonFailures(k.Logs(), "127.0.2.1", "alice", "locked: account"); n != 1 {
		t.Errorf("the wrong passcode from a new address is not refused as locked: account")
	}
	wantOK(t, "her right passcode from a new address", loginFrom(t, k, "127.0.2.2", "alice", passcode))
	wantOK(t, "her right passcode from her usual IP", loginFrom(t, k, "127.0.0.1", "alice", passcode))
	waitFor(t, 5*time.Second, "Dovecot to log alice's logins", func() bool {
		return countLogLines(w.dovecot.Log(), "Login: user=<alice>") >= 3
	})
}

// Issue 18: 12 wrong passcodes for alice from her own known-good address
// (a client behind the campus NAT, or her stale phone) lock that
// account+ip pair for wrong secrets, and her right passcode still logs
// in there.
func TestE2ELockoutRightPasscodeAtItsOwnAddress(t *testing.T) {
	w, passcode := aliceKnownGood(t)
	k := w.kanmon
	for i := range 12 {
		wantFailed(t, fmt.Sprintf("wrong passcode %d", i+1), loginFrom(t, k, "127.0.0.1", "alice", wrongPasscode(i)))
	}
	if n := kanmonFailures(k.Logs(), "127.0.0.1", "alice", "locked: account+ip"); n == 0 {
		t.Fatal("12 wrong passcodes did not lock alice at 127.0.0.1")
	}
	wantOK(t, "her right passcode at her own address", loginFrom(t, k, "127.0.0.1", "alice", passcode))
}

// aliceKnownGood starts a world in which alice has logged in once from
// 127.0.0.1 (known-good for her), and returns it with her passcode.
func aliceKnownGood(t *testing.T) (*world, string) {
	t.Helper()
	w := startWorld(t, kanmontest.Options{})
	passcode := w.kanmon.Passcode("alice", "Thunderbird")
	wantOK(t, "alice from her usual IP", loginFrom(t, w.kanmon, "127.0.0.1", "alice", passcode))
	return w, passcode
}
