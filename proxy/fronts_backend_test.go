package proxy_test

import (
	"io"
	"net"
	"testing"
	"time"
)

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
