package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// smtpFailed is the one reply every failed submission login gets.
const smtpFailed = "535 5.7.8 " + auth.FailureText

// submissionWorld is a Dovecot whose submission service relays to a sink
// that delivers into the same Dovecot, with kanmon's submission and IMAP
// listeners in front: what alice sends through kanmon, bob reads through
// kanmon.
type submissionWorld struct {
	*world
	sink *dovecottest.Sink
}

// startSubmissionWorld starts the sink, Dovecot (IMAP and submission) and
// kanmon, with alice ("Thunderbird") and bob ("Outlook") on 2FA and carol
// without. trusted becomes Dovecot's login_trusted_networks.
func startSubmissionWorld(t *testing.T, trusted ...string) *submissionWorld {
	t.Helper()
	sink := dovecottest.StartSink(t)
	dc := startDovecot(t, dovecottest.Options{
		SubmissionRelay:      sink.Addr,
		LoginTrustedNetworks: trusted,
	}, "alice", "bob", "carol")
	sink.DeliverTo(dc)
	k := kanmontest.Start(t, kanmontest.Options{
		IMAPBackend:       dc.IMAPAddr,
		SubmissionBackend: dc.SubmissionAddr,
		MasterUser:        masterUser,
		MasterPassword:    masterPassword,
		Passcodes:         map[string][]string{"alice": {"Thunderbird"}, "bob": {"Outlook"}},
	})
	return &submissionWorld{world: &world{dovecot: dc, kanmon: k}, sink: sink}
}

// uniqueSubject makes a subject no other test run uses.
func uniqueSubject(what string) string {
	return fmt.Sprintf("%s %d", what, time.Now().UnixNano())
}

// bobFinds logs bob in through kanmon's IMAP with his passcode and waits
// until his INBOX holds a message with subject; it returns its text.
func (w *submissionWorld) bobFinds(t *testing.T, subject string) string {
	t.Helper()
	c := dialClient(t, w.kanmon, "bob", w.kanmon.Passcode("bob", "Outlook"), nil)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		found, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if nums := found.AllSeqNums(); len(nums) == 1 {
			section := &imap.FetchItemBodySection{}
			msgs, err := c.Fetch(imap.SeqSetNum(nums[0]), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
			if err != nil || len(msgs) != 1 {
				t.Fatalf("FETCH: %v %v", msgs, err)
			}
			return string(msgs[0].FindBodySection(section))
		} else if len(nums) > 1 {
			t.Fatalf("bob has %d messages with subject %q", len(nums), subject)
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's INBOX has no message with subject %q", subject)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sendAsAlice submits one message with go-smtp's client on c.
func sendAsAlice(t *testing.T, c *smtp.Client, secret, subject string) {
	t.Helper()
	defer c.Close()
	if err := c.Hello("alice-laptop.example.edu"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", secret)); err != nil {
		t.Fatalf("AUTH through kanmon: %v", err)
	}
	msg := message("alice@example.edu", "bob@example.edu", subject, "sent through kanmon")
	if err := c.SendMail("alice@example.edu", []string{"bob@example.edu"}, bytes.NewReader(msg)); err != nil {
		t.Fatalf("sending through kanmon: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

// The round trip with Go clients: alice submits with her passcode over
// implicit TLS and over STARTTLS; bob reads both through kanmon's IMAP.
func TestE2ESubmissionRoundTrip(t *testing.T) {
	w := startSubmissionWorld(t)
	pc := w.kanmon.Passcode("alice", "Thunderbird")
	implicit, err := smtp.DialTLS(w.kanmon.SubmissionS, w.kanmon.ClientTLS)
	if err != nil {
		t.Fatal(err)
	}
	subject := uniqueSubject("implicit TLS")
	sendAsAlice(t, implicit, strings.ToLower(auth.FormatPasscode(pc)), subject)
	if body := w.bobFinds(t, subject); !strings.Contains(body, "sent through kanmon") {
		t.Errorf("bob's message: %q", body)
	}

	starttls, err := smtp.DialStartTLS(w.kanmon.SubmissionStartTLS, w.kanmon.ClientTLS)
	if err != nil {
		t.Fatal(err)
	}
	subject = uniqueSubject("STARTTLS")
	sendAsAlice(t, starttls, pc, subject)
	w.bobFinds(t, subject)

	msgs := w.sink.Messages()
	if len(msgs) != 2 || msgs[0].From != "alice@example.edu" || !slices.Equal(msgs[0].To, []string{"bob@example.edu"}) {
		t.Errorf("Dovecot relayed %+v", msgs)
	}
	noLeak(t, w.kanmon.Logs(), pc, masterPassword)
}

// rawSMTP is a line-level SMTP client.
type rawSMTP struct{ lineConn }

// dialRawSMTP connects to addr in clear text, with implicit TLS when cfg
// is set, and reads the greeting.
func dialRawSMTP(t *testing.T, addr string, cfg *tls.Config) *rawSMTP {
	t.Helper()
	r := &rawSMTP{dialLine(t, addr, cfg)}
	if g := r.reply(); !strings.HasPrefix(g[0], "220 ") {
		t.Fatalf("S: %q (want a greeting)", g)
	}
	return r
}

// reply reads one reply's lines, without CRLF.
func (r *rawSMTP) reply() []string {
	r.t.Helper()
	var lines []string
	for {
		l := r.line()
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// cmd sends line and CRLF and returns the last line of the reply.
func (r *rawSMTP) cmd(line string) string {
	r.t.Helper()
	return r.send(line + "\r\n")
}

// send writes raw as it is (a BDAT command and its chunk, say) and returns
// the last line of the reply.
func (r *rawSMTP) send(raw string) string {
	r.t.Helper()
	r.write(raw)
	lines := r.reply()
	return lines[len(lines)-1]
}

// extensions sends EHLO and returns the extension lines, without the name.
func (r *rawSMTP) extensions() []string {
	r.t.Helper()
	r.writeLine("EHLO e2e.example.edu")
	var exts []string
	for i, l := range r.reply() {
		if !strings.HasPrefix(l, "250") {
			r.t.Fatalf("EHLO: %q", l)
		}
		if i > 0 {
			exts = append(exts, l[4:])
		}
	}
	return exts
}

// kanmon's EHLO mirrors Dovecot's submission extensions (its SIZE limit
// among them) with kanmon's own AUTH; after AUTH the session is
// Dovecot's: its 503 for a second AUTH, CHUNKING with BDAT, and the codes
// kanmon gives before AUTH.
func TestE2ESubmissionAgainstDovecot(t *testing.T) {
	w := startSubmissionWorld(t)
	direct := dialRawSMTP(t, w.dovecot.SubmissionAddr, nil).extensions()
	c := dialRawSMTP(t, w.kanmon.SubmissionS, w.kanmon.ClientTLS)
	got := c.extensions()
	for _, ext := range direct {
		kw, _, _ := strings.Cut(strings.ToUpper(ext), " ")
		if kw != "AUTH" && kw != "STARTTLS" && kw[0] != 'X' && !slices.Contains(got, ext) {
			t.Errorf("kanmon's EHLO lacks Dovecot's %q\nkanmon: %q\nDovecot: %q", ext, got, direct)
		}
	}
	for _, ext := range got {
		if ext != "AUTH PLAIN LOGIN" && !slices.Contains(direct, ext) {
			t.Errorf("kanmon's EHLO has %q, which Dovecot does not offer", ext)
		}
	}
	if !slices.ContainsFunc(got, func(e string) bool { return strings.HasPrefix(e, "SIZE") }) || !slices.Contains(got, "AUTH PLAIN LOGIN") {
		t.Errorf("kanmon's EHLO %q lacks SIZE or its AUTH", got)
	}

	for _, step := range []struct{ send, want string }{
		{"MAIL FROM:<alice@example.edu>", "530 5.7.0 Authentication required"},
		{"AUTH PLAIN " + plainResponse("alice", alicePassword), smtpFailed},
		{"AUTH PLAIN " + plainResponse("alice", w.kanmon.Passcode("alice", "Thunderbird")), "235 2.7.0 Authentication successful"},
		{"AUTH PLAIN " + plainResponse("alice", w.kanmon.Passcode("alice", "Thunderbird")), "503 ..."},
		{"MAIL FROM:<alice@example.edu>", "250 ..."},
		{"RCPT TO:<bob@example.edu>", "250 ..."},
	} {
		if got := c.cmd(step.send); !matches(got, step.want) {
			t.Fatalf("C: %.40s\nS: %s\nwant %s", step.send, got, step.want)
		}
	}
	subject := uniqueSubject("chunks")
	msg := string(message("alice@example.edu", "bob@example.edu", subject, "in two BDAT chunks"))
	half := len(msg) / 2
	if got := c.send("BDAT " + strconv.Itoa(half) + "\r\n" + msg[:half]); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("first BDAT: %s", got)
	}
	if got := c.send("BDAT " + strconv.Itoa(len(msg)-half) + " LAST\r\n" + msg[half:]); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("last BDAT: %s", got)
	}
	w.bobFinds(t, subject)
}

// matches compares a line with want, a prefix when it ends in "...".
func matches(got, want string) bool {
	if p, ok := strings.CutSuffix(want, "..."); ok {
		return strings.HasPrefix(got, p)
	}
	return got == want
}

// noLeak fails if the log holds any of the secrets.
func noLeak(t *testing.T, log string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(log, s) {
			t.Errorf("kanmon log contains the secret %q", s)
		}
	}
}

// requireSwaks returns the path of swaks, or skips (fails under CI).
func requireSwaks(t *testing.T) string {
	t.Helper()
	return requireTool(t, "apt-get install swaks libnet-ssleay-perl", "swaks")
}

// runSwaks runs swaks, trusting the certificate in the file cacert
// (kanmon's CertFile), and returns its output and exit code.
func runSwaks(t *testing.T, cacert string, args ...string) (string, int) {
	t.Helper()
	swaks := requireSwaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"--timeout", "20", "--tls-verify", "--tls-ca-path", cacert}, args...)
	out, err := exec.CommandContext(ctx, swaks, all...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("swaks: %v", err)
	}
	return string(out), 0
}

// swaks, a real third-party SMTP client: alice's passcode sends over
// STARTTLS and implicit TLS, and bob finds the messages; her account
// password gets the uniform 535 5.7.8.
func TestE2ESubmissionSwaks(t *testing.T) {
	w := startSubmissionWorld(t)
	pc := w.kanmon.Passcode("alice", "Thunderbird")
	for _, tc := range []struct {
		name string
		addr string
		tls  string
	}{
		{"STARTTLS", w.kanmon.SubmissionStartTLS, "--tls"},
		{"implicit TLS", w.kanmon.SubmissionS, "--tls-on-connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(tc.addr)
			subject := uniqueSubject("swaks " + tc.name)
			out, code := runSwaks(t, w.kanmon.CertFile, "--server", host, "--port", port, tc.tls,
				"--auth", "PLAIN", "--auth-user", "alice", "--auth-password", pc,
				"--from", "alice@example.edu", "--to", "bob@example.edu",
				"--header", "Subject: "+subject, "--body", "sent by swaks through kanmon")
			if code != 0 {
				t.Fatalf("swaks exit %d:\n%s", code, out)
			}
			if body := w.bobFinds(t, subject); !strings.Contains(body, "sent by swaks through kanmon") {
				t.Errorf("bob's message: %q", body)
			}
		})
	}
	t.Run("account password", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(w.kanmon.SubmissionS)
		out, code := runSwaks(t, w.kanmon.CertFile, "--server", host, "--port", port, "--tls-on-connect",
			"--auth", "LOGIN", "--auth-user", "alice", "--auth-password", alicePassword,
			"--from", "alice@example.edu", "--to", "bob@example.edu")
		if code != 28 || !strings.Contains(out, "<~* "+smtpFailed) {
			t.Errorf("swaks exit %d (want 28, AUTH failed), output:\n%s", code, out)
		}
	})
	noLeak(t, w.kanmon.Logs(), pc, alicePassword)
}

// curl, another real client: smtps with alice's passcode delivers to bob;
// her account password gets the uniform 535 5.7.8 (curl: login denied).
func TestE2ESubmissionCurl(t *testing.T) {
	w := startSubmissionWorld(t)
	pc := w.kanmon.Passcode("alice", "Thunderbird")
	subject := uniqueSubject("curl")
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, message("alice@example.edu", "bob@example.edu", subject, "sent by curl through kanmon"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "smtps://" + w.kanmon.SubmissionS
	res := runCurl(t, w.kanmon.CertFile, url, "--user", "alice:"+pc, "--mail-from", "alice@example.edu", "--mail-rcpt", "bob@example.edu", "--upload-file", file)
	if res.exitCode != 0 {
		t.Fatalf("curl exit %d: %s", res.exitCode, res.stderr)
	}
	w.bobFinds(t, subject)

	res = runCurl(t, w.kanmon.CertFile, url, "--verbose", "--user", "alice:"+alicePassword, "--mail-from", "alice@example.edu", "--mail-rcpt", "bob@example.edu", "--upload-file", file)
	if res.exitCode != 67 || !strings.Contains(res.stderr, "< "+smtpFailed) {
		t.Errorf("curl exit %d (want 67, login denied), stderr:\n%s", res.exitCode, res.stderr)
	}
}

// forward_client_ip = "xclient" against Dovecot: where Dovecot trusts
// kanmon, the login carries kanmon's session id into Dovecot's log (and
// the client's address, here loopback too); where it does not, it offers
// no XCLIENT and the login fails temporarily, with the reason in kanmon's
// log.
func TestE2ESubmissionForwardsClient(t *testing.T) {
	forwardXCLIENT := func(t *testing.T, k *kanmontest.Kanmon) {
		t.Helper()
		cfg, err := os.ReadFile(k.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(cfg), "[backend.submission]\n", "[backend.submission]\nforward_client_ip = \"xclient\"\n", 1)
		if edited == string(cfg) {
			t.Fatal("no [backend.submission] in kanmon's config")
		}
		if err := os.WriteFile(k.ConfigPath, []byte(edited), 0o600); err != nil {
			t.Fatal(err)
		}
		k.Reload(t)
	}
	pc := func(w *submissionWorld) string { return w.kanmon.Passcode("alice", "Thunderbird") }
	t.Run("trusted", func(t *testing.T) {
		w := startSubmissionWorld(t, "127.0.0.0/8")
		forwardXCLIENT(t, w.kanmon)
		c, err := smtp.DialTLS(w.kanmon.SubmissionS, w.kanmon.ClientTLS)
		if err != nil {
			t.Fatal(err)
		}
		subject := uniqueSubject("xclient")
		sendAsAlice(t, c, pc(w), subject)
		w.bobFinds(t, subject)
		_, after, ok := strings.Cut(w.kanmon.Logs(), "msg=login ")
		_, id, _ := strings.Cut(after, "session=")
		id, _, _ = strings.Cut(id, " ")
		if !ok || id == "" || !strings.Contains(w.dovecot.Log(), "user=<alice>, method=PLAIN, rip=127.0.0.1") ||
			!strings.Contains(w.dovecot.Log(), "session=<"+id+">") {
			t.Errorf("Dovecot's log does not name kanmon's session %q:\n%s", id, w.dovecot.Log())
		}
	})
	t.Run("not trusted", func(t *testing.T) {
		w := startSubmissionWorld(t)
		forwardXCLIENT(t, w.kanmon)
		c := dialRawSMTP(t, w.kanmon.SubmissionS, w.kanmon.ClientTLS)
		c.extensions()
		if got := c.cmd("AUTH PLAIN " + plainResponse("alice", pc(w))); got != "454 4.7.0 Temporary authentication failure" {
			t.Errorf("AUTH: %s", got)
		}
		if !strings.Contains(w.kanmon.Logs(), "backend does not offer XCLIENT") {
			t.Errorf("kanmon's log does not say why:\n%s", w.kanmon.Logs())
		}
	})
}
