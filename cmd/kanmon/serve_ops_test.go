package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/memimap"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
	"github.com/kanmon-mail/kanmon/proxy"
)

// opsServe is `kanmon serve` run in-process in front of memimap, on a
// plaintext IMAP listener, with alice on 2FA (one passcode).
type opsServe struct {
	cfg, imap, passcode string
	log                 *syncbuf.Buffer
	cancel              context.CancelFunc
	done                chan error
}

func opsFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startOpsServe writes a config with the extra top-level keys and runs
// serve until the test cancels it (or its cleanup does).
func startOpsServe(t *testing.T, extra string) *opsServe {
	t.Helper()
	mem := memimap.New("kanmon", "master-pw-Vq3")
	if err := mem.AddUser("alice", "alice-account-pw-Rr5"); err != nil {
		t.Fatal(err)
	}
	memAddr, err := mem.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	dir := t.TempDir()
	s := &opsServe{cfg: filepath.Join(dir, "kanmon.toml"), imap: opsFreeAddr(t), log: &syncbuf.Buffer{}, done: make(chan error, 1)}
	text := fmt.Sprintf(`state_dir = "state"
accounts = "accounts.toml"
trusted_networks = ["127.0.0.1/32"]
%s
[[listener]]
protocol = "imap"
address = %q
tls = "none"

[backend.imap]
address = %q
master_user = "kanmon"
master_password = "master-pw-Vq3"

[lockout]
tarpit = "1ms"
tarpit_max = "1ms"
`, extra, s.imap, memAddr)
	if err := os.WriteFile(s.cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	store := auth.OpenStore(filepath.Join(dir, "accounts.toml"))
	if _, err := auth.EnableTwoFA(store, "alice"); err != nil {
		t.Fatal(err)
	}
	if s.passcode, err = auth.AddPasscode(store, filepath.Join(dir, "state"), "alice", "Thunderbird"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ready := make(chan struct{})
	go func() { s.done <- serve(ctx, s.cfg, s.log, func(*proxy.Server) { close(ready) }) }()
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
	case err := <-s.done:
		t.Fatalf("serve: %v\n%s", err, s.log.String())
	}
	return s
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
	c := dialIMAP(t, s.imap)
	c.send("a1 LOGIN alice alice-account-pw-Rr5")
	c.expect("a1 NO ")
	c.send("a2 LOGIN alice " + s.passcode)
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
			s := startOpsServe(t, extra)
			c := s.login(t)
			c.send("a3 LOGOUT")
			c.expect("a3 OK ")
			c.c.Close()
			s.cancel()
			if err := <-s.done; err != nil {
				t.Fatal(err)
			}
			s.done <- nil // for the cleanup
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
			for _, secret := range []string{s.passcode, strings.ToLower(s.passcode), "alice-account-pw-Rr5", "master-pw-Vq3"} {
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
	metricsAddr := opsFreeAddr(t)
	s := startOpsServe(t, fmt.Sprintf("metrics_address = %q\ndrain_timeout = \"1500ms\"\n", metricsAddr))
	idle := s.login(t)
	idle.send("a3 SELECT INBOX")
	idle.expect("a3 OK ")
	idle.send("a4 IDLE")
	idle.expect("+ ")
	cliMust(t, 0, "reload", "-config", s.cfg)
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

	pre := dialIMAP(t, s.imap)
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
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
		s.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after the drain")
	}
	if _, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		t.Error("the metrics listener is still open after serve returned")
	}
	if out := s.log.String(); !strings.Contains(out, "drain timeout: closing the remaining sessions") || !strings.Contains(out, "sessions=1") {
		t.Errorf("log lacks the drain timeout:\n%s", out)
	}
}
