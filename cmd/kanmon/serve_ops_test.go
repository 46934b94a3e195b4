package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
	"github.com/kanmon-mail/kanmon/proxy"
)

// opsServe is `kanmon serve` run in-process on a config directory.
type opsServe struct {
	*kanmontest.Files
	log    *syncbuf.Buffer
	cancel context.CancelFunc // SIGTERM
	done   chan struct{}      // closed when serve has returned
	err    error              // what serve returned, once done is closed
}

// startMemIMAP starts memimap, with master user kanmon, and user with
// password; it returns its address.
func startMemIMAP(t *testing.T, user, password string) string {
	t.Helper()
	_, addr := kanmontest.StartMemIMAP(t, "kanmon", "master-pw-Vq3", map[string]string{user: password})
	return addr
}

// startServeFiles writes a config for opts in front of backend, on one
// plaintext IMAP listener, and runs serve on it until the test cancels it
// (or its cleanup does).
func startServeFiles(t *testing.T, backend string, opts kanmontest.Options) *opsServe {
	t.Helper()
	opts.IMAPBackend, opts.MasterUser, opts.MasterPassword = backend, "kanmon", "master-pw-Vq3"
	opts.Listeners = []string{"none"}
	s := &opsServe{Files: kanmontest.WriteFiles(t, opts), log: &syncbuf.Buffer{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ready := make(chan struct{})
	go func() {
		s.err = serve(ctx, s.ConfigPath, s.log, func(*proxy.Server) { close(ready) })
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not return")
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", s.log.String())
		}
	})
	select {
	case <-ready:
	case <-s.done:
		t.Fatalf("serve: %v\n%s", s.err, s.log.String())
	}
	return s
}

// returned waits up to timeout for serve to return, and fails unless it
// returns nil.
func (s *opsServe) returned(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("serve: %v", s.err)
		}
	case <-time.After(timeout):
		t.Fatalf("serve did not return within %v", timeout)
	}
}

// startOpsServe runs serve with opts in front of memimap, with alice on
// 2FA (one passcode, Thunderbird).
func startOpsServe(t *testing.T, opts kanmontest.Options) *opsServe {
	t.Helper()
	opts.Passcodes = map[string][]string{"alice": {"Thunderbird"}}
	return startServeFiles(t, startMemIMAP(t, "alice", "alice-account-pw-Rr5"), opts)
}

// imapConn is a raw IMAP client connection.
type imapConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialIMAP(t *testing.T, addr string) *imapConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ic := &imapConn{t: t, c: c, br: bufio.NewReader(c)}
	ic.expect("* OK ")
	return ic
}

// expect reads lines until one starts with prefix; it returns that line.
func (c *imapConn) expect(prefix string) string {
	c.t.Helper()
	for {
		_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := c.br.ReadString('\n')
		if err != nil {
			c.t.Fatalf("waiting for %q: %v (got %q)", prefix, err, l)
		}
		if strings.HasPrefix(l, prefix) {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

func (c *imapConn) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
}

// expectEOF checks that the server closes the connection next.
func (c *imapConn) expectEOF() {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := c.br.ReadString('\n'); err == nil {
		c.t.Fatalf("want the end of the connection, got %q", l)
	}
}

// login logs alice in (and fails once with her account password first).
func (s *opsServe) login(t *testing.T) *imapConn {
	t.Helper()
	c := dialIMAP(t, s.IMAPPlain)
	c.send("a1 LOGIN alice alice-account-pw-Rr5")
	c.expect("a1 NO ")
	c.send("a2 LOGIN alice " + s.Passcode("alice", "Thunderbird"))
	c.expect("a2 OK ")
	return c
}

func TestServeLogFormats(t *testing.T) {
	for _, format := range []string{"", "text", "json"} {
		t.Run("format="+format, func(t *testing.T) {
			extra := ""
			if format != "" {
				extra = fmt.Sprintf("log_format = %q\n", format)
			}
			s := startOpsServe(t, kanmontest.Options{Extra: extra})
			c := s.login(t)
			c.send("a3 LOGOUT")
			c.expect("a3 OK ")
			c.c.Close()
			s.cancel()
			s.returned(t, 30*time.Second)
			out := s.log.String()
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			msgs := map[string]bool{}
			for _, l := range lines {
				if format == "json" {
					var rec map[string]any
					if err := json.Unmarshal([]byte(l), &rec); err != nil {
						t.Fatalf("not a JSON line: %q: %v", l, err)
					}
					if rec["time"] == nil || rec["level"] == nil || rec["msg"] == nil {
						t.Errorf("JSON line without time, level or msg: %q", l)
					}
					msgs[fmt.Sprint(rec["msg"])] = true
					if rec["msg"] == "login" && (rec["user"] != "alice" || rec["via"] != "passcode" || rec["proto"] != "imap") {
						t.Errorf("login line: %q", l)
					}
					continue
				}
				if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " level=") || !strings.Contains(l, " msg=") {
					t.Fatalf("not a text (key=value) line: %q", l)
				}
				if strings.Contains(l, "msg=login ") {
					msgs["login"] = true
				}
				if strings.Contains(l, `msg="login failed"`) {
					msgs["login failed"] = true
				}
			}
			if !msgs["login"] || !msgs["login failed"] {
				t.Errorf("log lacks the login and the failure:\n%s", out)
			}
			passcode := s.Passcode("alice", "Thunderbird")
			for _, secret := range []string{passcode, strings.ToLower(passcode), "alice-account-pw-Rr5", "master-pw-Vq3"} {
				if strings.Contains(out, secret) {
					t.Errorf("log holds a secret")
				}
			}
		})
	}
}

// scrapeMetrics returns the /metrics page at addr.
func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// serve with metrics_address: the metrics listener serves the logins, the
// live session and the reloads, and closes when serve returns. Then the
// shutdown: a session not logged in is told BYE at once, a session in
// IDLE drains for drain_timeout and then gets BYE, and serve returns.
func TestServeMetricsAndDrain(t *testing.T) {
	s := startOpsServe(t, kanmontest.Options{MetricsAddress: true, Extra: "drain_timeout = \"1500ms\"\n"})
	metricsAddr := s.MetricsAddr
	idle := s.login(t)
	idle.send("a3 SELECT INBOX")
	idle.expect("a3 OK ")
	idle.send("a4 IDLE")
	idle.expect("+ ")
	cliMust(t, 0, "reload", "-config", s.ConfigPath)
	body := scrapeMetrics(t, metricsAddr)
	for _, want := range []string{
		`kanmon_logins_total{protocol="imap",reason="passcode",result="ok"} 1`,
		`kanmon_logins_total{protocol="imap",reason="not_passcode",result="failed"} 1`,
		`kanmon_sessions{protocol="imap"} 1`,
		`kanmon_reloads_total{result="ok"} 1`,
		`kanmon_lockouts_active{scope="account+ip"} 0`,
		`kanmon_build_info{`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}

	pre := dialIMAP(t, s.IMAPPlain)
	start := time.Now()
	s.cancel()
	pre.expect("* BYE Server shutting down.")
	pre.expectEOF()
	if d := time.Since(start); d > time.Second {
		t.Errorf("the session not logged in was closed %v after shutdown began, want at once", d)
	}
	idle.expect("* BYE Server shutting down.")
	idle.expectEOF()
	if d := time.Since(start); d < 1400*time.Millisecond || d > 4*time.Second {
		t.Errorf("the IDLE session was closed %v after shutdown began, want after the 1.5s drain", d)
	}
	s.returned(t, 5*time.Second)
	if _, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		t.Error("the metrics listener is still open after serve returned")
	}
	if out := s.log.String(); !strings.Contains(out, "drain timeout: closing the remaining sessions") || !strings.Contains(out, "sessions=1") {
		t.Errorf("log lacks the drain timeout:\n%s", out)
	}
}
