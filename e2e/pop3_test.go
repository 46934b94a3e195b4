package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// pop3Failed is the one reply every failed POP3 login gets.
const pop3Failed = "-ERR [AUTH] " + auth.FailureText

// startPOP3World starts a Dovecot and a kanmon with POP3 listeners in
// front of it: alice on 2FA with a "Cybozu" passcode, carol without 2FA.
// maxConns, when not 0, limits Dovecot's connections per user and IP.
func startPOP3World(t *testing.T, maxConns int, opts kanmontest.Options) *world {
	t.Helper()
	dc := startDovecot(t, dovecottest.Options{
		MaxUserConnections: maxConns,
	}, "alice", "carol")
	return &world{dovecot: dc, kanmon: startPOP3Kanmon(t, dc, opts)}
}

// startPOP3Kanmon starts a kanmon with POP3 listeners in front of dc.
func startPOP3Kanmon(t *testing.T, dc *dovecottest.Server, opts kanmontest.Options) *kanmontest.Kanmon {
	t.Helper()
	opts.POP3Backend = dc.POP3Addr
	opts.MasterUser, opts.MasterPassword = masterUser, masterPassword
	opts.Passcodes = map[string][]string{"alice": {"Cybozu"}}
	return kanmontest.Start(t, opts)
}

// rawPOP3 is a line-level POP3 client.
type rawPOP3 struct{ lineConn }

// dialPOP3 connects to addr, with implicit TLS when cfg is set, and reads
// the greeting.
func dialPOP3(t *testing.T, addr string, cfg *tls.Config) *rawPOP3 {
	t.Helper()
	p := &rawPOP3{dialLine(t, addr, cfg)}
	p.greeting("+OK ")
	return p
}

// cmd sends line and returns the one-line reply.
func (p *rawPOP3) cmd(line string) string {
	p.t.Helper()
	p.writeLine(line)
	return p.line()
}

// ok sends line and fails unless the reply is +OK; it returns the reply.
func (p *rawPOP3) ok(line string) string {
	p.t.Helper()
	reply := p.cmd(line)
	if !strings.HasPrefix(reply, "+OK") {
		verb, _, _ := strings.Cut(line, " ")
		p.t.Fatalf("C: %s ...\nS: %s", verb, reply)
	}
	return reply
}

// multi sends line, expects +OK and returns the multi-line body,
// dot-unstuffed (RFC 1939 §3).
func (p *rawPOP3) multi(line string) []string {
	p.t.Helper()
	p.ok(line)
	var body []string
	for l := p.line(); l != "."; l = p.line() {
		body = append(body, strings.TrimPrefix(l, "."))
	}
	return body
}

// login sends USER and PASS and returns the reply to PASS.
func (p *rawPOP3) login(user, secret string) string {
	p.t.Helper()
	p.ok("USER " + user)
	return p.cmd("PASS " + secret)
}

// Story: Cybozu polls alice's mailbox through kanmon. Every "minute" a new
// session logs in with her Cybozu passcode, lists, retrieves and deletes
// the first message, and quits; each deletion is committed in Dovecot.
func TestE2EPOP3CybozuPoll(t *testing.T) {
	w := startPOP3World(t, 0, kanmontest.Options{})
	const rounds = 3
	for i := 1; i <= rounds; i++ {
		w.dovecot.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", fmt.Sprintf("poll %d", i), "cybozu marker"))
	}
	passcode := w.kanmon.Passcode("alice", "Cybozu")
	seen := map[string]bool{}
	for round := 1; round <= rounds; round++ {
		p := dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
		if reply := p.login("alice", passcode); reply != "+OK Logged in." {
			t.Fatalf("round %d: PASS: %s", round, reply)
		}
		list := p.multi("LIST")
		if want := rounds - round + 1; len(list) != want {
			t.Fatalf("round %d: LIST has %d messages, want %d: %q", round, len(list), want, list)
		}
		msg := strings.Join(p.multi("RETR 1"), "\n")
		if !strings.Contains(msg, "cybozu marker") {
			t.Fatalf("round %d: RETR 1 is not a delivered message:\n%s", round, msg)
		}
		subject := msg[strings.Index(msg, "Subject: "):]
		subject, _, _ = strings.Cut(subject, "\n")
		if seen[subject] {
			t.Fatalf("round %d: %q retrieved again: the last DELE was not committed", round, subject)
		}
		seen[subject] = true
		p.ok("DELE 1")
		p.ok("QUIT")
	}

	p := dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
	p.login("alice", passcode)
	if stat := p.ok("STAT"); !strings.HasPrefix(stat, "+OK 0 ") {
		t.Errorf("after the polls: %s, want an empty maildrop", stat)
	}
	p.ok("QUIT")

	// Dovecot itself, logged into directly, agrees.
	c, err := imapclient.DialInsecure(w.dovecot.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", alicePassword).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 0 {
		t.Errorf("Dovecot's INBOX still has %d messages", sel.NumMessages)
	}
	if n := strings.Count(w.kanmon.Logs(), "msg=login listener="+w.kanmon.POP3S+" proto=pop3"); n != rounds+1 {
		t.Errorf("kanmon logged %d POP3 logins, want %d:\n%s", n, rounds+1, w.kanmon.Logs())
	}
}

// A 2FA account's password is refused with the uniform [AUTH] reply;
// carol's own password passes through from trusted networks only.
func TestE2EPOP3Policy(t *testing.T) {
	w := startPOP3World(t, 0, kanmontest.Options{})
	w.dovecot.Deliver(t, "carol", message("bob@example.edu", "carol@example.edu", "for carol", "carol marker"))

	p := dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
	if reply := p.login("alice", alicePassword); reply != pop3Failed {
		t.Errorf("alice's account password: %s", reply)
	}
	if reply := p.cmd("AUTH PLAIN " + plainResponse("alice", alicePassword)); reply != pop3Failed {
		t.Errorf("alice's account password by AUTH PLAIN: %s", reply)
	}

	p = dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
	if reply := p.login("carol", carolPassword); reply != "+OK Logged in." {
		t.Fatalf("carol from a trusted network: %s", reply)
	}
	if msg := strings.Join(p.multi("RETR 1"), "\n"); !strings.Contains(msg, "carol marker") {
		t.Errorf("carol's RETR 1:\n%s", msg)
	}
	p.ok("QUIT")
	p = dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
	if reply := p.login("carol", "not-carols-password"); reply != pop3Failed {
		t.Errorf("carol's wrong password: %s", reply)
	}

	outside := startPOP3Kanmon(t, w.dovecot, kanmontest.Options{TrustedNetworks: []string{}})
	p = dialPOP3(t, outside.POP3S, outside.ClientTLS)
	if reply := p.login("carol", carolPassword); reply != pop3Failed {
		t.Errorf("carol from outside trusted_networks: %s", reply)
	}
}

// STLS on the 110-style listener, then AUTH PLAIN with an initial
// response; after login the client's CAPA is Dovecot's.
func TestE2EPOP3STLS(t *testing.T) {
	w := startPOP3World(t, 0, kanmontest.Options{})
	p := dialPOP3(t, w.kanmon.POP3StartTLS, nil)
	if caps := p.multi("CAPA"); strings.Contains(strings.Join(caps, " "), "SASL") {
		t.Errorf("CAPA before TLS offers SASL: %q", caps)
	}
	p.ok("STLS")
	tc := tls.Client(p.conn, w.kanmon.ClientTLS)
	p.conn, p.br = tc, bufio.NewReader(tc)
	reply := p.cmd("AUTH PLAIN " + plainResponse("alice", w.kanmon.Passcode("alice", "Cybozu")))
	if reply != "+OK Logged in." {
		t.Fatalf("AUTH PLAIN after STLS: %s", reply)
	}
	if caps := strings.Join(p.multi("CAPA"), " "); !strings.Contains(caps, "UIDL") || strings.Contains(caps, "SASL") {
		t.Errorf("CAPA after login is not Dovecot's: %q", caps)
	}
	p.ok("QUIT")
}

// plainResponse is the SASL PLAIN response without authzid.
func plainResponse(user, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + secret))
}

// A real third-party client: curl retrieves, lists and deletes through
// kanmon with alice's passcode, over implicit TLS and over STLS.
func TestE2EPOP3Curl(t *testing.T) {
	w := startPOP3World(t, 0, kanmontest.Options{})
	k := w.kanmon
	requireCurl(t)
	w.dovecot.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "curl one", "curl marker one"))
	w.dovecot.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "curl two", "curl marker two"))
	user := "alice:" + strings.ToLower(auth.FormatPasscode(k.Passcode("alice", "Cybozu")))
	url := "pop3s://" + k.POP3S + "/"

	res := runCurl(t, k.CertFile, "--user", user, url)
	if res.exitCode != 0 || len(strings.Fields(res.stdout)) != 4 {
		t.Fatalf("curl LIST: exit %d, stdout %q, stderr %s", res.exitCode, res.stdout, res.stderr)
	}
	res = runCurl(t, k.CertFile, "--user", user, url+"1")
	if res.exitCode != 0 || !strings.Contains(res.stdout, "curl marker") {
		t.Fatalf("curl RETR 1: exit %d, stdout %q, stderr %s", res.exitCode, res.stdout, res.stderr)
	}
	res = runCurl(t, k.CertFile, "--user", user, "--request", "DELE", "--head", url+"1")
	if res.exitCode != 0 {
		t.Fatalf("curl DELE 1: exit %d, stderr %s", res.exitCode, res.stderr)
	}
	res = runCurl(t, k.CertFile, "--user", user, "--ssl-reqd", "pop3://"+k.POP3StartTLS+"/")
	if res.exitCode != 0 || len(strings.Fields(res.stdout)) != 2 {
		t.Fatalf("curl LIST over STLS after DELE: exit %d, stdout %q, stderr %s", res.exitCode, res.stdout, res.stderr)
	}
	res = runCurl(t, k.CertFile, "--user", "alice:"+alicePassword, url)
	if res.exitCode != 67 { // CURLE_LOGIN_DENIED
		t.Errorf("curl with alice's account password: exit %d, stderr %s", res.exitCode, res.stderr)
	}
}

// Dovecot's [IN-USE] reaches the client as Dovecot sent it: a second
// session for alice while the first holds her only allowed connection.
func TestE2EPOP3InUse(t *testing.T) {
	w := startPOP3World(t, 1, kanmontest.Options{})
	passcode := w.kanmon.Passcode("alice", "Cybozu")
	first := dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
	if reply := first.login("alice", passcode); reply != "+OK Logged in." {
		t.Fatalf("first session: %s", reply)
	}
	// Answered by Dovecot's pop3 process: it has registered the session.
	first.ok("STAT")
	second := dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
	const want = "-ERR [IN-USE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=1)"
	if reply := second.login("alice", passcode); reply != want {
		t.Fatalf("second session:\n got %s\nwant %s", reply, want)
	}
	first.ok("QUIT")
	// Once the first session is gone, alice gets in again.
	waitFor(t, 5*time.Second, "alice's connection slot", func() bool {
		p := dialPOP3(t, w.kanmon.POP3S, w.kanmon.ClientTLS)
		defer p.conn.Close()
		return p.login("alice", passcode) == "+OK Logged in."
	})
}
