package proxy_test

// Hardening, no oracle: with a real tarpit, a wrong passcode, an unknown
// user (asked of the backend, which refuses it), a locked account and a
// 2FA account's correct account password get the same reply, byte for
// byte, after the same time: each at least the tarpit, and the medians of
// the four within a tolerance of each other.

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

const (
	// oracleTarpit is the tarpit of the no-oracle test: long enough that
	// a backend round trip or a passcode check fits well inside it.
	oracleTarpit = 200 * time.Millisecond
	// oracleTolerance is how far apart the cases' median reply times may
	// be. Timer and scheduling noise on a loaded 2-core machine under
	// -race stays well below it; a skipped tarpit would not.
	oracleTolerance = 150 * time.Millisecond
	// oracleTries is how many times each case is timed.
	oracleTries = 3
)

func TestHardeningNoOracle(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			var backend string
			switch proto {
			case protoIMAP:
				backend = newWorld(t, worldOptions{}).backend.addr // memimap
			case protoPOP3:
				backend = startTCPServer(t, newFakePOP3().serve).addr
			default:
				backend = startSMTPBackend(t).addr
			}
			k := kanmonFor(t, proto, backend, kanmontest.Options{
				TrustedNetworks: []string{"127.0.0.0/8"},
				Passcodes:       map[string][]string{"alice": {app}, "bob": {app}},
				Lockout: fmt.Sprintf("tarpit = %q\ntarpit_max = %q\naccount_ip_threshold = 3\n",
					oracleTarpit, oracleTarpit),
			})
			_, _, plain := listeners(k, proto)
			// attempt logs in as user on a fresh connection from ip and
			// returns the raw reply and how long it took.
			attempt := func(ip, user, secret string) ([]byte, time.Duration) {
				t.Helper()
				c := newConv(t, dialFrom(t, ip, plain))
				c.run(greeting(proto))
				var cmd string
				switch proto {
				case protoIMAP:
					cmd = fmt.Sprintf("a1 LOGIN %s %q\r\n", user, secret)
				case protoPOP3:
					cmd = "AUTH PLAIN " + plainIR("", user, secret) + "\r\n"
				default:
					c.ehlo("client.example.org")
					cmd = "AUTH PLAIN " + plainIR("", user, secret) + "\r\n"
				}
				start := time.Now()
				c.write(cmd)
				_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
				raw, err := c.br.ReadBytes('\n')
				d := time.Since(start)
				if err != nil {
					t.Fatalf("%s from %s: reading the reply: %v", user, ip, err)
				}
				if c.br.Buffered() > 0 {
					t.Errorf("%s from %s: more after the reply", user, ip)
				}
				c.conn.Close()
				return raw, d
			}

			// Lock bob from 127.0.0.2: three wrong passcodes.
			for i := range 3 {
				attempt("127.0.0.2", "bob", wrongCode(i))
			}
			cases := []struct {
				name         string
				ip           func(try int) string
				user, secret func(try int) string
			}{
				{"wrong passcode", ipFor(10), fixed("alice"), func(i int) string { return wrongCode(10 + i) }},
				{"unknown user", ipFor(20), fixed("mallory"), fixed("mallory-pw-Q9x")},
				// A right passcode passes a lock; a wrong one gets the lock's
				// refusal, which must look like every other failure.
				{"locked account", fixed("127.0.0.2"), fixed("bob"), func(i int) string { return wrongCode(40 + i) }},
				{"2FA account's real password", ipFor(30), fixed("alice"), fixed(alicePW)},
			}
			var want []byte
			medians := map[string]time.Duration{}
			for _, cs := range cases {
				var times []time.Duration
				for try := range oracleTries {
					raw, d := attempt(cs.ip(try), cs.user(try), cs.secret(try))
					if want == nil {
						want = raw
					}
					if !bytes.Equal(raw, want) {
						t.Errorf("%s: reply %q, want %q as for the others", cs.name, raw, want)
					}
					if d < oracleTarpit {
						t.Errorf("%s: answered after %v, before the %v tarpit", cs.name, d, oracleTarpit)
					}
					times = append(times, d)
				}
				slices.Sort(times)
				medians[cs.name] = times[len(times)/2]
			}
			lo, hi := time.Hour, time.Duration(0)
			for _, m := range medians {
				lo, hi = min(lo, m), max(hi, m)
			}
			t.Logf("median reply times: %v", medians)
			if hi-lo > oracleTolerance {
				t.Errorf("median reply times %v differ by %v, more than %v", medians, hi-lo, oracleTolerance)
			}
			if !bytes.HasSuffix(want, []byte("\r\n")) || !strings.Contains(string(want), "uthentication") && !strings.Contains(string(want), "AUTH") {
				t.Errorf("the uniform reply %q is not an authentication failure", want)
			}
			// Each case is what its name says.
			log := k.Logs()
			for _, reason := range []string{`reason="no passcode matched"`, `reason="backend rejected the password"`,
				`reason="locked: account+ip"`, `reason="2FA account presented a non-passcode secret"`} {
				if !strings.Contains(log, reason) {
					t.Errorf("no login failed with %s:\n%s", reason, log)
				}
			}
		})
	}
}

// ipFor gives each try its own loopback address from 127.0.0.base, so
// that the failures of one case do not lock the next try.
func ipFor(base int) func(int) string {
	return func(try int) string { return fmt.Sprintf("127.0.0.%d", base+try) }
}

// wrongCode is a passcode-shaped secret (16 letters) that is nobody's.
func wrongCode(i int) string { return "ZZZZWRONGCODEZZ" + string(rune('A'+i)) }

func fixed(s string) func(int) string { return func(int) string { return s } }
