package e2e

// Limits, shutdown and observability against a real Dovecot: the real
// `kanmon serve` with caps, metrics_address and a short drain_timeout,
// SIGTERM; and a kanmon whose log is searched for every secret after
// logins of every kind.

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// opsLine is a line-level client of any of the three protocols.
type opsLine struct{ lineConn }

// dialOps connects (with implicit TLS when cfg is set) and returns the
// client and the greeting.
func dialOps(t *testing.T, addr string, cfg *tls.Config) (*opsLine, string) {
	t.Helper()
	c := &opsLine{dialLine(t, addr, cfg)}
	return c, c.line()
}

// cmd sends line and returns the first reply line that starts with want
// (skipping others, such as IMAP untagged responses); it fails if the
// reply is another.
func (c *opsLine) cmd(line, want string) string {
	c.t.Helper()
	c.writeLine(line)
	for {
		l := c.line()
		if strings.HasPrefix(l, want) {
			return l
		}
		if strings.HasPrefix(l, "* ") && !strings.HasPrefix(want, "* ") || strings.HasPrefix(l, "+ ") && !strings.HasPrefix(want, "+") {
			continue
		}
		c.t.Fatalf("C: %.30s…\nS: %s\nwant %s…", line, l, want)
	}
}

// The real `kanmon serve` in front of Dovecot, with caps, metrics and a
// 2 s drain: the per-user+IP cap refuses a third session after a good
// login (and Dovecot is not left with its connection), the connection
// cap refuses before the greeting, the metrics listener shows what
// happened, and SIGTERM closes the sessions not logged in at once, drains
// the IDLE ones for 2 s with "* BYE Server shutting down.", and exits 0.
// No secret reaches the log.
func TestE2ECapsMetricsAndSIGTERMDrain(t *testing.T) {
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	bin := buildKanmon(t)
	f := serveFiles(t, dc, kanmontest.Options{
		Extra:          "max_connections = 5\nmax_sessions_per_user_ip = 2\ndrain_timeout = \"2s\"\nlog_format = \"json\"\n",
		MetricsAddress: true,
	})
	imaps, clientTLS := f.IMAPS, f.ClientTLS
	mustRun(t, bin, "2fa", "enable", "-config", f.ConfigPath, "alice")
	passcode := cliAddPasscode(t, bin, "-config", f.ConfigPath, "alice", "Thunderbird")
	serve := startServe(t, bin, f.ConfigPath, imaps)

	a := openRevokeIdle(t, imaps, clientTLS, "alice", passcode)
	b := openRevokeIdle(t, imaps, clientTLS, "alice", strings.ToLower(passcode))
	third, greeting := dialOps(t, imaps, clientTLS)
	if !strings.HasPrefix(greeting, "* OK ") {
		t.Fatalf("greeting %q", greeting)
	}
	third.cmd("t1 LOGIN alice "+passcode, "t1 NO [LIMIT] Maximum number of connections from user+IP exceeded")
	third.cmd("t2 LOGIN alice "+alicePassword, "t2 "+failedReply)
	pre, _ := dialOps(t, imaps, clientTLS)
	// a, b, third and pre are 4 of max_connections = 5.
	fifth, greeting := dialOps(t, imaps, clientTLS)
	if !strings.HasPrefix(greeting, "* OK ") {
		t.Fatalf("fifth connection: %q", greeting)
	}
	sixth, greeting := dialOps(t, imaps, clientTLS)
	if greeting != "* BYE [UNAVAILABLE] Too many connections; please try again later." {
		t.Fatalf("sixth connection: %q, want the BYE of max_connections", greeting)
	}
	sixth.eof()
	fifth.conn.Close()
	// Dovecot holds only the two sessions: the refused login's connection
	// was closed.
	waitFor(t, 5*time.Second, "Dovecot to see the refused session's connection close", func() bool {
		n := 0
		for _, l := range strings.Split(dc.Log(), "\n") {
			if strings.Contains(l, "imap(alice)") && strings.Contains(l, "Disconnected") {
				n++
			}
		}
		return n == 1
	})

	resp, err := http.Get("http://" + f.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kanmon_logins_total{protocol="imap",reason="passcode",result="ok"} 3`,
		`kanmon_logins_total{protocol="imap",reason="not_passcode",result="failed"} 1`,
		`kanmon_limit_refusals_total{limit="max_sessions_per_user_ip",protocol="imap"} 1`,
		`kanmon_limit_refusals_total{limit="max_connections",protocol="imap"} 1`,
		`kanmon_sessions{protocol="imap"} 2`,
		`kanmon_login_duration_seconds_count{protocol="imap",result="ok"} 3`,
		`kanmon_relayed_bytes_total{direction="backend_to_client",protocol="imap"} `,
		`kanmon_lockouts_active{scope="account+ip"} 0`,
		`kanmon_build_info{goversion="go1.`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}

	start := time.Now()
	serve.signal(t, syscall.SIGTERM)
	if l := pre.line(); l != "* BYE Server shutting down." {
		t.Errorf("pre-auth session got %q at shutdown", l)
	}
	pre.eof()
	if l := third.line(); l != "* BYE Server shutting down." {
		t.Errorf("refused session (not logged in) got %q at shutdown", l)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("sessions not logged in closed %v after SIGTERM, want at once", d)
	}
	for _, s := range []*revokeIdle{a, b} {
		if l := s.bye(); l != "* BYE Server shutting down." {
			t.Errorf("IDLE session got %q, want the shutdown BYE", l)
		}
	}
	if d := time.Since(start); d < 1900*time.Millisecond || d > 5*time.Second {
		t.Errorf("IDLE sessions closed %v after SIGTERM, want after the 2s drain", d)
	}
	serve.exited(t, 5*time.Second)
	log := serve.log.String()
	for _, want := range []string{`"msg":"drain timeout: closing the remaining sessions"`, `"msg":"kanmon stopped"`, `"limit":"max_sessions_per_user_ip"`} {
		if !strings.Contains(log, want) {
			t.Errorf("serve log lacks %s", want)
		}
	}
	for _, secret := range opsSecretForms(passcode, alicePassword, masterPassword) {
		if strings.Contains(log, secret) {
			t.Errorf("serve log contains the secret %q", secret)
		}
	}
}

// opsSecretForms are the ways a secret may show up in a log: as typed, in
// either case, in base64, and a passcode grouped in fours as shown.
func opsSecretForms(secrets ...string) []string {
	var out []string
	for _, s := range secrets {
		out = append(out, s, strings.ToLower(s), strings.ToUpper(s), base64.StdEncoding.EncodeToString([]byte(s)))
		if len(s) == 16 {
			g := s[:4] + " " + s[4:8] + " " + s[8:12] + " " + s[12:]
			out = append(out, g, strings.ToLower(g))
		}
	}
	return out
}

// kanmon (at debug level) in front of Dovecot, over IMAP and POP3: after
// logins of every kind, good and bad, its log holds none of the secrets
// used, in any form.
func TestE2ENoSecretInLogs(t *testing.T) {
	dc := startDovecot(t, dovecottest.Options{}, "alice", "carol")
	k := kanmontest.Start(t, kanmontest.Options{
		IMAPBackend: dc.IMAPAddr, POP3Backend: dc.POP3Addr,
		MasterUser: masterUser, MasterPassword: masterPassword,
		Passcodes: map[string][]string{"alice": {"Thunderbird"}},
	})
	pc := k.Passcode("alice", "Thunderbird")
	grouped := strings.ToLower(pc[:4] + " " + pc[4:8] + " " + pc[8:12] + " " + pc[12:])
	const wrongPasscode, carolTypo = "QWERTYUIOPASDFGH", "carol-typo-pw-X1"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	blobs := []string{"\x00alice\x00" + pc, "alice\x00alice\x00" + grouped, "\x00alice\x00" + wrongPasscode, "\x00carol\x00" + carolPassword, "\x00carol\x00" + carolTypo}

	imap := func(steps ...string) {
		c, _ := dialOps(t, k.IMAPPlain, nil)
		for i := 0; i+1 < len(steps); i += 2 {
			c.cmd(steps[i], steps[i+1])
		}
		c.conn.Close()
	}
	imap("a LOGIN alice "+pc, "a OK ")
	imap(`a LOGIN alice "`+grouped+`"`, "a OK ")
	imap("a LOGIN alice "+wrongPasscode, "a "+failedReply)
	imap("a LOGIN alice "+alicePassword, "a "+failedReply)
	imap("a LOGIN carol "+carolPassword, "a OK ")
	imap("a LOGIN carol "+carolTypo, "a "+failedReply)
	imap("a AUTHENTICATE PLAIN "+b64(blobs[0]), "a OK ")
	imap("a AUTHENTICATE PLAIN", "+", b64(blobs[1]), "a OK ")
	imap("a AUTHENTICATE PLAIN "+b64(blobs[2]), "a "+failedReply)
	imap("a AUTHENTICATE PLAIN "+b64(blobs[3]), "a OK ")
	imap("a AUTHENTICATE PLAIN "+b64(blobs[4]), "a "+failedReply)
	imap("a AUTHENTICATE LOGIN", "+", b64("alice"), "+", b64(pc), "a OK ")
	imap("a AUTHENTICATE LOGIN", "+", b64("carol"), "+", b64(carolPassword), "a OK ")

	pop3 := func(steps ...string) {
		c, _ := dialOps(t, k.POP3Plain, nil)
		for i := 0; i+1 < len(steps); i += 2 {
			c.cmd(steps[i], steps[i+1])
		}
		c.conn.Close()
	}
	pop3("USER alice", "+OK", "PASS "+grouped, "+OK")
	pop3("USER alice", "+OK", "PASS "+alicePassword, pop3Failed)
	pop3("USER carol", "+OK", "PASS "+carolPassword, "+OK")
	pop3("USER carol", "+OK", "PASS "+carolTypo, pop3Failed)
	pop3("AUTH PLAIN "+b64(blobs[0]), "+OK")
	pop3("AUTH LOGIN", "+", b64("alice"), "+", b64(pc), "+OK")

	k.Stop()
	logs := k.Logs()
	if n := strings.Count(logs, "msg=login "); n != 12 {
		t.Fatalf("%d successful logins in the log, want 12:\n%s", n, logs)
	}
	secrets := opsSecretForms(pc, wrongPasscode, alicePassword, carolPassword, carolTypo, masterPassword)
	secrets = append(secrets, grouped)
	for _, blob := range blobs {
		secrets = append(secrets, b64(blob))
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("kanmon log contains the secret %q", s)
		}
	}
}
