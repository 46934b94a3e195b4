package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// Every refused login gets the same reply, byte for byte, whatever the
// reason and however the secret was presented; the log says why, and
// never holds the secret. The session stays open.
func TestFrontsUniformFailure(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		out := f.world(t, worldOptions{trusted: []string{}})
		wrong := "QQQQWWWWEEEERRRR"
		if wrong == w.passcode {
			wrong = "WWWWQQQQEEEERRRR"
		}
		for _, tc := range []struct {
			name                  string
			w                     frontWorld
			m                     method
			authzid, user, secret string
			reason                auth.Reason
			backend               bool // the backend is asked (passthrough)
		}{
			{"wrong passcode", w, byLogin, "", "alice", wrong, auth.ReasonNoMatch, false},
			{"wrong passcode by PLAIN", w, byPlain, "", "alice", wrong, auth.ReasonNoMatch, false},
			{"2FA user with her account password", w, bySASLLogin, "", "alice", alicePW, auth.ReasonNotPasscode, false},
			{"2FA user with her account password by login", w, byLogin, "", "alice", alicePW, auth.ReasonNotPasscode, false},
			{"unknown user", w, byLogin, "", "mallory", "mallory-pw-Q9x", auth.ReasonBackendRejected, true},
			{"carol's wrong password", w, byPlainIR, "", "carol", "not-carols-pw-3", auth.ReasonBackendRejected, true},
			{"PLAIN authzid differs", w, byPlainIR, "carol", "alice", w.passcode, auth.ReasonAuthzid, false},
			{"empty password", w, byLogin, "", "alice", "", auth.ReasonEmptySecret, false},
			{"no 2FA from outside trusted_networks", out, byLogin, "", "carol", carolPW, auth.ReasonOutside, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := tc.w.asked()
				c := f.open(t, f.plain(tc.w.k))
				c.run(f.say(tc.m, tc.authzid, tc.user, tc.secret)...)
				if got := c.line(); got != f.failed {
					t.Errorf("reply:\n got %q\nwant %q", got, f.failed)
				}
				c.run(f.alive...)
				if asked := tc.w.asked() > before; asked != tc.backend {
					t.Errorf("backend asked: %v, want %v", asked, tc.backend)
				}
				wantLog(t, tc.w.k, `reason="`+tc.reason.String()+`"`)
				if tc.secret != "" {
					noLeak(t, tc.w.k.Logs(), tc.secret)
				}
			})
		}
		for _, x := range []frontWorld{w, out} {
			noLeak(t, x.k.Logs(), wrong, alicePW, carolPW, masterPW, w.passcode, out.passcode)
		}
	})
}

// Cancelled and malformed SASL exchanges and unknown mechanisms get the
// protocol's own refusal, leave the session open, and never reach the
// backend.
func TestFrontsSASLErrors(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		auth, cont := "C: "+f.authCmd, "S: "+f.cont
		for _, tc := range []struct {
			name  string
			steps []string
		}{
			{"cancel PLAIN", []string{auth + " PLAIN", cont, "C: *", "S: " + f.saslCancelled}},
			{"cancel LOGIN password", []string{auth + " LOGIN " + b64("alice"), cont + "UGFzc3dvcmQ6", "C: *", "S: " + f.saslCancelled}},
			{"cancel as initial response", []string{auth + " PLAIN *", "S: " + f.saslCancelIR}},
			{"bad base64", []string{auth + " LOGIN", cont + "VXNlcm5hbWU6", "C: !!!not-base64!!!", "S: " + f.saslBase64}},
			{"bad base64 initial response", []string{auth + " PLAIN a=b=c", "S: " + f.saslBase64}},
			{"PLAIN without NULs", []string{auth + " PLAIN " + b64("carol"+carolPW), "S: " + f.saslMalformed}},
			{"empty initial response", []string{auth + " PLAIN =", "S: " + f.saslMalformed}},
			{"NUL in LOGIN", []string{auth + " LOGIN " + b64("carol\x00alice"), cont + "UGFzc3dvcmQ6", "C: " + b64(carolPW), "S: " + f.saslMalformed}},
			{"unknown mechanism", []string{auth + " CRAM-MD5", "S: " + f.saslMechanism}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := f.open(t, f.plain(w.k))
				c.run(tc.steps...)
				c.run(f.alive...)
			})
		}
		if n := w.asked(); n != 0 {
			t.Errorf("backend asked %d times", n)
		}
	})
}

// Before TLS on a STARTTLS listener no credentials are taken, however
// they come, and the backend is never asked; each refusal is a strike.
func TestFrontsPrivacyRequired(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		_, starttls, _ := listeners(w.k, f.proto)
		c := f.open(t, starttls)
		first := func(m method) string { return f.say(m, "", "alice", w.passcode)[0] }
		c.run(first(byLogin), "S: "+f.privacy, first(byPlainIR), "S: "+f.privacy)
		c.run(f.alive...)
		c.run(first(byPlain), "S: "+f.privacy)
		c.run(f.tooMany...)
		c = f.open(t, starttls)
		c.run(first(bySASLLogin), "S: "+f.privacy)
		if n := w.asked(); n != 0 {
			t.Errorf("backend asked %d times before TLS", n)
		}
		noLeak(t, w.k.Logs(), w.passcode, b64(w.passcode), plainIR("", "alice", w.passcode))
	})
}

// CVE-2011-0411: a login pipelined behind STARTTLS (STLS) in clear text
// is dropped, never run inside the TLS session.
func TestFrontsStartTLSInjection(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		_, starttls, _ := listeners(w.k, f.proto)
		c := f.open(t, starttls)
		// Both a login's first line and a whole AUTH PLAIN: a reply to
		// either would come before alive's.
		var injected string
		for _, m := range []method{byLogin, byPlainIR} {
			injected += strings.TrimPrefix(f.say(m, "", "alice", w.passcode)[0], "C: ") + "\r\n"
		}
		c.write(f.startTLS + "\r\n" + injected)
		c.run("S: " + f.startTLSOK)
		c.startTLS(w.k.ClientTLS)
		f.ready(c)
		c.run(f.alive...) // no reply to the injected login
		if n := w.asked(); n != 0 {
			t.Fatalf("the injected login reached the backend (%d logins)", n)
		}
		if got := f.login(c, byLogin, "alice", w.passcode); !lineMatches(got, f.loggedIn) {
			t.Errorf("login after TLS: got %q, want %q", got, f.loggedIn)
		}
		wantLog(t, w.k, "discarded bytes pipelined after "+f.startTLSName)
	})
}

// Three bad or failed commands end a pre-auth session: a command not
// allowed yet, a cancelled exchange, bad base64, a failed login and an
// unknown mechanism count alike. Good commands do not count.
func TestFrontsThreeStrikes(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		notAllowed := []string{notAllowedCommand(f), "S: " + f.notAllowed}
		t.Run("bad commands", func(t *testing.T) {
			c := f.open(t, f.plain(w.k))
			c.run(notAllowed...)
			c.run("C: "+f.authCmd+" PLAIN", "S: "+f.cont, "C: *", "S: "+f.saslCancelled)
			c.run("C: "+f.authCmd+" LOGIN", "S: "+f.cont+"VXNlcm5hbWU6", "C: %%%", "S: "+f.saslBase64)
			c.run(f.tooMany...)
		})
		t.Run("failed logins", func(t *testing.T) {
			c := f.open(t, f.plain(w.k))
			c.run(f.say(byLogin, "", "alice", alicePW)...)
			c.run("S: " + f.failed)
			c.run(f.say(byPlainIR, "", "alice", "WRONGWRONGWRONGW")...)
			c.run("S: " + f.failed)
			c.run("C: "+f.authCmd+" XOAUTH2", "S: "+f.saslMechanism)
			c.run(f.tooMany...)
		})
		t.Run("good commands do not count", func(t *testing.T) {
			c := f.open(t, f.plain(w.k))
			c.run(notAllowed...)
			c.run(f.alive...)
			c.run(notAllowed...)
			if got := f.login(c, byLogin, "alice", w.passcode); !lineMatches(got, f.loggedIn) {
				t.Errorf("login after two strikes: got %q, want %q", got, f.loggedIn)
			}
		})
	})
}

// notAllowedCommand is a command of the mail session sent before login.
func notAllowedCommand(f front) string {
	switch f.proto {
	case protoIMAP:
		return "C: a1 SELECT INBOX"
	case protoPOP3:
		return "C: RETR 1"
	}
	return "C: MAIL FROM:<a@example.org>"
}

// Every spelling of alice in a local domain is alice ([users]): her
// passcode logs her in as alice under any of them, her account password
// is refused under all, their failures add to one lockout counter, and a
// foreign domain is refused without asking the backend.
func TestFrontsUserSpellings(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{extra: `users = { domains = ["kyokyo-u.ac.jp"] }` + "\n"})
		plain := f.plain(w.k)
		c := f.open(t, plain)
		if got := f.login(c, byPlainIR, "ALICE@KYOKYO-U.AC.JP", w.passcode); !lineMatches(got, f.loggedIn) {
			t.Fatalf("passcode as ALICE@KYOKYO-U.AC.JP: %q", got)
		}
		wantLog(t, w.k, "msg=login", "user=alice via=passcode")
		for i, spelling := range []string{"alice", "ALICE", "alice@kyokyo-u.ac.jp", "Alice@Kyokyo-U.ac.jp"} {
			before := w.asked()
			c := f.open(t, plain)
			if got := f.login(c, byLogin, spelling, alicePW+strconv.Itoa(i)); got != f.failed {
				t.Errorf("password as %s: %q, want %q", spelling, got, f.failed)
			}
			if w.asked() != before {
				t.Errorf("password as %s reached the backend", spelling)
			}
			wantLog(t, w.k, `user=alice reason="2FA account presented a non-passcode secret" lockout.counted=true lockout.account_ip=`+strconv.Itoa(i+1))
		}
		before := w.asked()
		c = f.open(t, plain)
		if got := f.login(c, byLogin, "carol@other.example", carolPW); got != f.failed {
			t.Errorf("a foreign domain: %q", got)
		}
		if w.asked() != before {
			t.Error("a foreign domain reached the backend")
		}
		wantLog(t, w.k, `user=carol@other.example reason="user name refused" detail="user name is in a domain that is not configured"`)
		// Off the campus a refused name counts against its address.
		c = f.openFrom(t, "127.0.0.9", plain)
		if got := f.login(c, byLogin, "junk@elsewhere.example", "x"); got != f.failed {
			t.Errorf("a refused name: %q", got)
		}
		wantLog(t, w.k, `user=junk@elsewhere.example reason="user name refused"`, "lockout.ip=1 ")
		c = f.open(t, plain)
		if got := f.login(c, byLogin, "Carol@Kyokyo-U.ac.jp", carolPW); !lineMatches(got, f.loggedIn) {
			t.Errorf("carol's password as Carol@Kyokyo-U.ac.jp: %q", got)
		}
		wantLog(t, w.k, "user=carol via=passthrough")
	})
}

// With no [users] domains, a 2FA account's name with any domain is
// refused before the backend, which might strip the domain; other names
// keep theirs.
func TestFrontsUserDomainWithoutDomains(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		c := f.open(t, f.plain(w.k))
		if got := f.login(c, byLogin, "alice@anything.example", alicePW); got != f.failed {
			t.Errorf("alice@anything.example: %q", got)
		}
		if n := w.asked(); n != 0 {
			t.Errorf("backend asked %d times", n)
		}
		wantLog(t, w.k, `user=alice@anything.example reason="user name keeps a domain, and the name before it has 2FA"`)
	})
}

// Locks refuse wrong secrets only: a 2FA user's right passcode logs in
// under the account+ip lock at her known-good address, and under the
// account lock from an address she never used, while wrong passcodes
// are still refused there, as locked, with the uniform reply.
func TestFrontsRightPasscodeUnderLock(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{trusted: []string{"192.0.2.0/24"}})
		plain := f.plain(w.k)
		wrong := func(i int) string { return fmt.Sprintf("WRONG%011d", i)[:16] }
		login := func(ip, secret string) string {
			c := f.openFrom(t, ip, plain)
			return f.login(c, byLogin, "alice", secret)
		}
		if got := login("127.0.0.1", w.passcode); !lineMatches(got, f.loggedIn) {
			t.Fatalf("first login: %q", got)
		}
		for i := range 12 {
			if got := login("127.0.0.1", strings.Repeat(string(rune('A'+i)), 16)); got != f.failed {
				t.Fatalf("wrong passcode %d: %q", i, got)
			}
		}
		wantLog(t, w.k, `user=alice reason="locked: account+ip"`)
		if got := login("127.0.0.1", w.passcode); !lineMatches(got, f.loggedIn) {
			t.Errorf("right passcode under the account+ip lock: %q", got)
		}
		for i := range 60 {
			if got := login(fmt.Sprintf("127.0.3.%d", 1+i%20), wrong(i)); got != f.failed {
				t.Fatalf("wrong passcode %d from elsewhere: %q", i, got)
			}
		}
		wantLog(t, w.k, `user=alice reason="locked: account"`)
		if got := login("127.0.4.1", w.passcode); !lineMatches(got, f.loggedIn) {
			t.Errorf("right passcode from a new address under the account lock: %q", got)
		}
		before := strings.Count(w.k.Logs(), `reason="locked: account"`)
		if got := login("127.0.4.2", wrong(99)); got != f.failed {
			t.Errorf("wrong passcode under the account lock: %q", got)
		}
		if after := strings.Count(w.k.Logs(), `reason="locked: account"`); after != before+1 {
			t.Errorf("a wrong passcode under the lock was not refused as locked")
		}
	})
}

// On the campus (trusted_networks) the IP and prefix scopes neither count
// nor lock: a spray of wrong passwords over many accounts from the NAT
// address does not lock out a password user who never logged in there.
func TestFrontsCampusNATNotLocked(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		plain := f.plain(w.k)
		for i := range 35 {
			c := f.open(t, plain)
			if got := f.login(c, byLogin, fmt.Sprintf("student%02d", i), "Spring2026!"); got != f.failed {
				t.Fatalf("spray %d: %q", i, got)
			}
			c.conn.Close() // max_preauth_per_ip
		}
		if strings.Contains(w.k.Logs(), `reason="locked: ip"`) || strings.Contains(w.k.Logs(), "ip=35") {
			t.Errorf("the campus address was counted or locked:\n%s", w.k.Logs())
		}
		c := f.open(t, plain)
		if got := f.login(c, byLogin, "carol", carolPW); !lineMatches(got, f.loggedIn) {
			t.Errorf("carol on the campus after the spray: %q", got)
		}
	})
}

// A backend that is down, never answers, hangs up after its greeting or
// refuses the master login, or a lockout store that cannot be trusted,
// gets the client the protocol's temporary failure, never the
// authentication-failed reply; the log says why.
func TestFrontsBackendUnavailable(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		wantUnavailable := func(t *testing.T, addr, user, secret string) {
			t.Helper()
			c := f.open(t, addr)
			if got := f.login(c, byLogin, user, secret); !lineMatches(got, f.unavailable) {
				t.Errorf("login as %s: got %q, want %q", user, got, f.unavailable)
			}
		}
		t.Run("down", func(t *testing.T) {
			k := f.startKanmon(t, deadAddr(t))
			wantUnavailable(t, f.plain(k), "alice", k.Passcode("alice", app))
			wantUnavailable(t, f.plain(k), "carol", carolPW) // passthrough too
			wantLog(t, k, "backend unavailable", "backend dial failed")
		})
		t.Run("never answers", func(t *testing.T) {
			silent := startTCPServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
			k := f.startKanmon(t, silent.addr, `timeout = "300ms"`)
			start := time.Now()
			wantUnavailable(t, f.plain(k), "alice", k.Passcode("alice", app))
			if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
				t.Errorf("unavailable after %v, want about the 300ms backend timeout", d)
			}
			wantLog(t, k, "reading backend greeting")
		})
		t.Run("closes after greeting", func(t *testing.T) {
			fake := startTCPServer(t, func(c net.Conn) {
				_, _ = io.WriteString(c, f.backendGreeting+"\r\n")
				c.Close()
			})
			k := f.startKanmon(t, fake.addr)
			wantUnavailable(t, f.plain(k), "alice", k.Passcode("alice", app))
			wantLog(t, k, "backend unavailable")
		})
		t.Run("master login rejected", func(t *testing.T) {
			const wrongPW = "wrong-master-pw-Jj3"
			w := f.world(t, worldOptions{masterPW: wrongPW})
			wantUnavailable(t, f.plain(w.k), "alice", w.passcode)
			wantLog(t, w.k, "level=ERROR", "BACKEND REJECTED THE MASTER LOGIN", "master_user="+masterUser)
			noLeak(t, w.k.Logs(), wrongPW, w.passcode)
			// What contrib/prometheus's KanmonMasterLoginRejected counts.
			hs := httptest.NewServer(w.k.Metrics.Handler())
			defer hs.Close()
			wantSamples(t, scrape(t, hs.URL+"/metrics"), map[string]float64{
				`kanmon_backend_errors_total{kind="master_rejected",protocol="` + f.proto + `"}`: 1,
				`kanmon_backend_errors_total{kind="login",protocol="` + f.proto + `"}`:           0,
			})
		})
		t.Run("lockout store unavailable", func(t *testing.T) {
			w := f.world(t, worldOptions{})
			if err := w.k.Guard.Close(); err != nil {
				t.Fatal(err)
			}
			wantUnavailable(t, f.plain(w.k), "alice", w.passcode)
			if n := w.asked(); n != 0 {
				t.Errorf("backend asked %d times with the lockout store closed", n)
			}
		})
	})
}

// A client that sends nothing is disconnected after preauth_timeout, one
// that stops in the middle of a SASL exchange too, and one that never
// starts its TLS handshake is closed without a word.
func TestFrontsPreAuthTimeout(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{extra: `preauth_timeout = "300ms"`})
		implicit, _, plain := listeners(w.k, f.proto)
		for _, tc := range []struct {
			name  string
			steps []string
		}{
			{"after greeting", nil},
			{"in AUTH", []string{"C: " + f.authCmd + " LOGIN", "S: " + f.cont + "VXNlcm5hbWU6"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				start := time.Now()
				c := dial(t, plain)
				c.run(f.greeting)
				if tc.steps != nil {
					f.ready(c)
					c.run(tc.steps...)
				}
				c.run("S: "+f.idle, "EOF")
				if d := time.Since(start); d < 250*time.Millisecond {
					t.Errorf("disconnected after %v, before the 300ms timeout", d)
				}
			})
		}
		t.Run("no TLS handshake", func(t *testing.T) {
			conn, err := net.Dial("tcp", implicit)
			if err != nil {
				t.Fatal(err)
			}
			newConv(t, conn).expectEOF()
		})
	})
}

// Shutting down ends pre-auth sessions at once, on the plain and the
// STARTTLS listener: they do not wait out their pre-auth timeout.
func TestFrontsShutdownEndsPreAuthSessions(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := f.world(t, worldOptions{})
		_, starttls, plain := listeners(w.k, f.proto)
		c := f.open(t, plain)
		s := f.open(t, starttls)
		stopped := make(chan struct{})
		go func() {
			w.k.Stop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			t.Fatal("kanmon did not stop within 3s with idle pre-auth sessions")
		}
		c.run("S: "+f.shuttingDown, "EOF")
		s.run("S: "+f.shuttingDown, "EOF")
	})
}
