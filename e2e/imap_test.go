package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// failedReply is the one reply every failed login gets.
const failedReply = "NO [AUTHENTICATIONFAILED] " + auth.FailureText

// rawIMAP is a line-level IMAP client for transcripts.
type rawIMAP struct{ lineConn }

// dialRaw connects to kanmon's implicit-TLS IMAP listener and reads the
// greeting.
func dialRaw(t *testing.T, k *kanmontest.Kanmon) *rawIMAP {
	t.Helper()
	r := &rawIMAP{dialLine(t, k.IMAPS, k.ClientTLS)}
	r.greeting("* OK ")
	return r
}

// cmd sends "C: line" and returns the tagged reply, skipping untagged ones.
func (r *rawIMAP) cmd(line string) string {
	r.t.Helper()
	tag, _, _ := strings.Cut(line, " ")
	r.writeLine(line)
	for {
		l := r.line()
		if strings.HasPrefix(l, tag+" ") {
			return strings.TrimPrefix(l, tag+" ")
		}
	}
}

// dialClient logs in through kanmon's implicit-TLS listener with imapclient.
func dialClient(t *testing.T, k *kanmontest.Kanmon, user, secret string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	if opts == nil {
		opts = &imapclient.Options{}
	}
	opts.TLSConfig = k.ClientTLS
	c, err := imapclient.DialTLS(k.IMAPS, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, secret).Wait(); err != nil {
		t.Fatalf("login %s through kanmon: %v", user, err)
	}
	return c
}

// Story 2: alice's passcode (grouped, lower-case, as a user might type it)
// logs her in; after that SELECT, FETCH, APPEND and IDLE work against the
// real Dovecot, and the client sees Dovecot's capabilities.
func TestE2EPasscodeSessionAgainstDovecot(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	w.dovecot.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "hello alice", "the e2e marker 7f3a"))

	typed := strings.ToLower(auth.FormatPasscode(w.kanmon.Passcode("alice", "Thunderbird")))
	var exists atomic.Uint32
	c := dialClient(t, w.kanmon, "alice", typed, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists.Store(*d.NumMessages)
				}
			},
		},
	})
	caps := c.Caps()
	for _, want := range []imap.Cap{"SORT", "THREAD=REFERENCES", imap.CapIdle} {
		if !caps.Has(want) {
			t.Errorf("post-login capabilities lack Dovecot's %s: %v", want, caps)
		}
	}

	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 1 {
		t.Fatalf("INBOX has %d messages, want 1", sel.NumMessages)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})), "the e2e marker 7f3a") {
		t.Fatalf("FETCH did not return the delivered message: %+v", msgs)
	}

	// APPEND with a literal.
	appended := message("alice@example.edu", "alice@example.edu", "draft", strings.Repeat("x", 5000))
	kanmontest.Append(t, c, "INBOX", appended)

	// IDLE here; a second session (STARTTLS listener, AUTHENTICATE PLAIN)
	// appends, and Dovecot pushes EXISTS through kanmon.
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := imapclient.DialStartTLS(w.kanmon.IMAPStartTLS, &imapclient.Options{TLSConfig: w.kanmon.ClientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Authenticate(sasl.NewPlainClient("", "alice", w.kanmon.Passcode("alice", "Cybozu"))); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN with the Cybozu passcode: %v", err)
	}
	ac2 := c2.Append("INBOX", int64(len(appended)), nil)
	_, _ = ac2.Write(appended)
	_ = ac2.Close()
	if _, err := ac2.Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "EXISTS 3 during IDLE", func() bool { return exists.Load() == 3 })
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.kanmon.Logs(), "app=Thunderbird") {
		t.Errorf("kanmon log does not name the passcode's app:\n%s", w.kanmon.Logs())
	}
}

// Story 3: the account password of a 2FA account is refused, though it is
// the right password at Dovecot; so are a wrong passcode and an unknown
// user, all with the same reply. The log names the reason, never the secret.
func TestE2EAccountPasswordRefused(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	direct, err := imapclient.DialInsecure(w.dovecot.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := direct.Login("alice", alicePassword).Wait(); err != nil {
		t.Fatalf("alice's password should work directly at Dovecot: %v", err)
	}
	direct.Close()

	cases := []struct {
		name, user, secret string
		reason             auth.Reason
	}{
		{"2FA user with account password", "alice", alicePassword, auth.ReasonNotPasscode},
		{"wrong passcode", "alice", "ABCDEFGHIJKLMNOP", auth.ReasonNoMatch},
		{"another user's passcode", "alice", w.kanmon.Passcode("bob", "Outlook"), auth.ReasonNoMatch},
		{"unknown user", "mallory", "ABCDEFGHIJKLMNOP", auth.ReasonNone},
	}
	for _, tc := range cases {
		r := dialRaw(t, w.kanmon)
		got := r.cmd(fmt.Sprintf("a1 LOGIN %s %q", tc.user, tc.secret))
		if got != failedReply {
			t.Errorf("%s: S: a1 %s\nwant: a1 %s", tc.name, got, failedReply)
		}
	}
	logs := w.kanmon.Logs()
	for _, tc := range cases {
		if tc.reason != auth.ReasonNone && !strings.Contains(logs, tc.reason.String()) {
			t.Errorf("log lacks reason %q", tc.reason)
		}
		if strings.Contains(logs, tc.secret) {
			t.Errorf("log contains the secret of case %q", tc.name)
		}
	}
}

// Story 4: carol has no 2FA. From the campus her own password passes
// through to Dovecot, whose answer stands.
func TestE2EPassthroughFromTrustedNetwork(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	c := dialClient(t, w.kanmon, "carol", carolPassword, nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	_ = c.Logout().Wait()

	r := dialRaw(t, w.kanmon)
	if got := r.cmd(`a1 LOGIN carol "wrong-password"`); got != failedReply {
		t.Errorf("S: a1 %s\nwant: a1 %s", got, failedReply)
	}
	waitFor(t, 5*time.Second, "Dovecot to log carol's failed passthrough", func() bool {
		return strings.Contains(w.dovecot.Log(), "carol")
	})
}

// Story 4, outside: with nothing trusted, carol is refused with the same
// reply and Dovecot is never asked, so kanmon is no password oracle.
func TestE2EOutsideTrustedNetworkNeverReachesDovecot(t *testing.T) {
	w := startWorld(t, kanmontest.Options{TrustedNetworks: []string{}})
	for _, secret := range []string{carolPassword, "wrong-password"} {
		r := dialRaw(t, w.kanmon)
		if got := r.cmd(fmt.Sprintf("a1 LOGIN carol %q", secret)); got != failedReply {
			t.Errorf("S: a1 %s\nwant: a1 %s", got, failedReply)
		}
	}
	// alice's passcode still works from outside: that is what 2FA is for.
	c := dialClient(t, w.kanmon, "alice", w.kanmon.Passcode("alice", "Thunderbird"), nil)
	_ = c.Logout().Wait()
	if strings.Contains(w.dovecot.Log(), "carol") {
		t.Errorf("Dovecot saw carol although she was outside:\n%s", w.dovecot.Log())
	}
	if !strings.Contains(w.kanmon.Logs(), auth.ReasonOutside.String()) {
		t.Errorf("kanmon log lacks %q", auth.ReasonOutside)
	}
}

// curl is a real third-party IMAP client: implicit TLS and STARTTLS with
// the passcode work, the account password is denied (curl exit 67).
func TestE2ECurl(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	w.dovecot.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "curl check", "curl saw marker 91c2"))
	passcode := w.kanmon.Passcode("alice", "Thunderbird")

	res := runCurl(t, w.kanmon.CertFile, "--user", "alice:"+auth.FormatPasscode(passcode), "imaps://"+w.kanmon.IMAPS+"/INBOX;UID=1")
	if res.exitCode != 0 || !strings.Contains(res.stdout, "curl saw marker 91c2") {
		t.Fatalf("curl imaps: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
	}
	res = runCurl(t, w.kanmon.CertFile, "--ssl-reqd", "--user", "alice:"+strings.ToLower(passcode),
		"imap://"+w.kanmon.IMAPStartTLS+"/INBOX", "-X", "FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")
	if res.exitCode != 0 || !strings.Contains(res.stdout, "FETCH") {
		t.Fatalf("curl imap+STARTTLS: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
	}
	res = runCurl(t, w.kanmon.CertFile, "--user", "alice:"+alicePassword, "imaps://"+w.kanmon.IMAPS+"/INBOX")
	if res.exitCode != 67 {
		t.Fatalf("curl with the account password: exit %d (want 67, login denied), stderr %q", res.exitCode, res.stderr)
	}
	res = runCurl(t, w.kanmon.CertFile, "--user", "carol:"+carolPassword, "imaps://"+w.kanmon.IMAPS+"/")
	if res.exitCode != 0 || !strings.Contains(res.stdout, "INBOX") {
		t.Fatalf("curl passthrough for carol: exit %d, stdout %q, stderr %q", res.exitCode, res.stdout, res.stderr)
	}
}

// A master password Dovecot rejects is a server misconfiguration: the user
// gets UNAVAILABLE (not "wrong password") and the log says so loudly.
func TestE2EMasterLoginRejected(t *testing.T) {
	w := startWorld(t, kanmontest.Options{MasterUser: masterUser, MasterPassword: "not-the-master-password"})
	r := dialRaw(t, w.kanmon)
	got := r.cmd(fmt.Sprintf("a1 LOGIN alice %s", w.kanmon.Passcode("alice", "Thunderbird")))
	if !strings.HasPrefix(got, "NO [UNAVAILABLE]") {
		t.Errorf("S: a1 %s (want NO [UNAVAILABLE])", got)
	}
	if !strings.Contains(w.kanmon.Logs(), "level=ERROR") || !strings.Contains(w.kanmon.Logs(), "MASTER LOGIN") {
		t.Errorf("no loud error about the master login in:\n%s", w.kanmon.Logs())
	}
}

// Revoking a passcode and reloading makes the next login with it fail,
// while the account's other passcode keeps working.
func TestE2ERevokeThenReload(t *testing.T) {
	w := startWorld(t, kanmontest.Options{})
	thunderbird := w.kanmon.Passcode("alice", "Thunderbird")
	dialClient(t, w.kanmon, "alice", thunderbird, nil).Close()

	if _, _, err := auth.RevokePasscode(auth.OpenStore(filepath.Join(w.kanmon.Dir, "accounts.toml")), "alice", "Thunderbird"); err != nil {
		t.Fatal(err)
	}
	w.kanmon.Reload(t)
	r := dialRaw(t, w.kanmon)
	if got := r.cmd("a1 LOGIN alice " + thunderbird); got != failedReply {
		t.Errorf("revoked passcode: S: a1 %s", got)
	}
	dialClient(t, w.kanmon, "alice", w.kanmon.Passcode("alice", "Cybozu"), nil).Close()
}
