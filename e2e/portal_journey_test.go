package e2e

// The self-service portal in a real browser (issue 7): a headless Chromium
// signs in to `kanmon serve` in front of the real Dovecot, turns on 2FA
// with a code that oathtool (standing in for the phone apps) computes from
// the key on the page, adds an app passcode and reads mail with it, deletes
// it while the mail session is open, signs in with TOTP and with a one-time
// code, and turns 2FA off.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

const (
	// portalIssuer is the [portal] issuer, the service name in the apps.
	portalIssuer = "Kanmon E2E"
	// portalMailHost is the [portal] mail_host, the server name in the
	// client settings.
	portalMailHost = "mail.example.edu"
	// portalCookie is the portal's session cookie.
	portalCookie = "__Host-kanmon_portal"
	// totpPeriod is RFC 6238's time step, the one the apps use.
	totpPeriod = 30
)

var (
	// groupedKeyRE is a 16-character base32 TOTP key as the page shows it.
	groupedKeyRE = regexp.MustCompile(`^[A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4}$`)
	// oneTimeCodeRE is a one-time code as the page shows it.
	oneTimeCodeRE = regexp.MustCompile(`^[a-z0-9]{5}-[a-z0-9]{5}$`)
	// groupedPasscodeRE is an app passcode as the page shows it.
	groupedPasscodeRE = regexp.MustCompile(`^[A-Z]{4} [A-Z]{4} [A-Z]{4} [A-Z]{4}$`)
)

// portalServer is `kanmon serve` with the portal on, in front of a private
// Dovecot.
type portalServer struct {
	*revokeServer
	bin string
}

// startPortalServer starts Dovecot (alice, bob) and `kanmon serve` with an
// IMAP implicit-TLS listener, 127.0.0.1 trusted, and the portal on a free
// loopback port; setup runs the admin CLI on the config first.
func startPortalServer(t *testing.T, setup func(bin, cfg string)) *portalServer {
	t.Helper()
	dc := startDovecot(t, dovecottest.Options{}, "alice", "bob")
	bin := buildKanmon(t)
	p := startRevokeServer(t, bin, dc, kanmontest.Options{
		Portal: &kanmontest.Portal{Issuer: portalIssuer, MailHost: portalMailHost},
	}, func(cfg string) {
		if setup != nil {
			setup(bin, cfg)
		}
	})
	waitFor(t, 10*time.Second, "the portal to listen", func() bool {
		c, err := tls.Dial("tcp", p.PortalAddr, p.ClientTLS)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return &portalServer{revokeServer: p, bin: bin}
}

// imapLogin logs in through kanmon's IMAP listener and returns the tagged
// reply ("OK …", or failedReply), then logs out.
func (p *portalServer) imapLogin(t *testing.T, user, secret string) string {
	t.Helper()
	s := &revokeIdle{dialLine(t, p.IMAPS, p.ClientTLS)}
	defer s.conn.Close()
	s.expect("* OK ")
	r := s.command("l1 LOGIN " + user + " " + secret)
	if strings.HasPrefix(r, "OK") {
		s.command("l2 LOGOUT")
	}
	return r
}

// twofaStatus runs `kanmon 2fa status` and returns its output and exit code.
func (p *portalServer) twofaStatus(t *testing.T, user string) (string, int) {
	t.Helper()
	out, err := exec.Command(p.bin, "2fa", "status", "-config", p.ConfigPath, user).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// totpCode asks oathtool, an authenticator independent of kanmon, for the
// code of the shown key at the start of step.
func totpCode(t *testing.T, oathtool, key string, step int64) string {
	t.Helper()
	out, err := exec.Command(oathtool, "--totp", "-b", "-N", fmt.Sprintf("@%d", step*totpPeriod),
		strings.ReplaceAll(key, " ", "")).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	code := strings.TrimSpace(string(out))
	if !regexp.MustCompile(`^\d{6}$`).MatchString(code) {
		t.Fatalf("oathtool printed %q", code)
	}
	return code
}

// currentStep is the TOTP step of now.
func currentStep() int64 { return time.Now().Unix() / totpPeriod }

// waitForStep sleeps until the TOTP step is at least step.
func waitForStep(t *testing.T, step int64) {
	t.Helper()
	if d := time.Until(time.Unix(step*totpPeriod, 0)); d > 0 {
		t.Logf("waiting %v for the next TOTP step (a used code cannot be replayed)", d.Round(time.Second))
		time.Sleep(d + 100*time.Millisecond)
	}
}

// signIn fills the one sign-in form and submits it.
func (b *browser) signIn(user, password, code string) {
	b.t.Helper()
	if st := b.open("/signin"); st != http.StatusOK {
		b.t.Fatalf("GET /signin: %d", st)
	}
	b.fill(`form[action="/signin"] input[name="user"]`, user)
	b.fill(`form[action="/signin"] input[name="password"]`, password)
	b.fill(`form[action="/signin"] input[name="code"]`, code)
	if st := b.press("#signin"); st != http.StatusOK {
		b.t.Fatalf("signing in: HTTP %d on %s", st, b.location())
	}
}

// onAccount checks that the account page is shown with 2FA on or off.
func (b *browser) onAccount(on bool) {
	b.t.Helper()
	if !b.has("#twofa-status") {
		msg := ""
		if b.has("#error") {
			msg = ": " + b.text("#error")
		}
		b.t.Fatalf("want the account page, got %s%s", b.location(), msg)
	}
	if got, want := b.attr("#twofa-status", "data-on"), fmt.Sprint(on); got != want {
		b.t.Fatalf("#twofa-status data-on=%q, want %q", got, want)
	}
}

// signInFails checks that a sign-in is refused with #error on the sign-in
// form, and returns the message.
func (b *browser) signInFails(what, user, password, code string) string {
	b.t.Helper()
	b.signIn(user, password, code)
	if b.has("#twofa-status") || !b.has("#error") || !b.has("#signin") {
		b.t.Fatalf("%s: want the sign-in form with #error, got %s", what, b.location())
	}
	return b.text("#error")
}

// signOut presses #signout and checks that the sign-in form comes back
// and the account page is gone.
func (b *browser) signOut() {
	b.t.Helper()
	b.press("#signout")
	if !b.has("#signin") {
		b.t.Fatalf("after sign-out: %s", b.location())
	}
	b.open("/account")
	if b.has("#twofa-status") {
		b.t.Fatal("the account page is still shown after sign-out")
	}
}

// TestE2EPortalJourney is the browser journey: alice signs in with
// her password, turns on 2FA with the code oathtool computes from the key
// on the page, keeps her one-time codes, adds a Thunderbird passcode and
// reads mail with it, deletes it while the IMAP session idles (BYE), signs
// in again with TOTP and with a one-time code (once only), and turns 2FA
// off. The numbers are the steps.
func TestE2EPortalJourney(t *testing.T) {
	requireChromium(t)
	oathtool := requireTool(t, "apt-get install oathtool; scripts/test-deps.sh does it", "oathtool")
	p := startPortalServer(t, nil)
	b := startBrowser(t, "https://"+p.PortalAddr, p.CertPEM)
	t.Logf("screenshots in %s", b.shots)

	// Without 2FA, alice's password works through kanmon from the trusted
	// network (passthrough).
	if r := p.imapLogin(t, "alice", alicePassword); !strings.HasPrefix(r, "OK") {
		t.Fatalf("IMAP with the password before 2FA: %s", r)
	}

	// 1. Sign in with the password; the code stays empty.
	b.open("/")
	if !strings.HasSuffix(b.location(), "/signin") || !b.has("#signin") {
		t.Fatalf("GET / without a session led to %s", b.location())
	}
	b.screenshot("1-signin")
	b.signIn("alice", alicePassword, "")
	b.onAccount(false)
	if !strings.HasSuffix(b.location(), "/account") {
		t.Errorf("signed in at %s, want /account", b.location())
	}
	if c := b.sessionCookie(); !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict {
		t.Errorf("session cookie: HttpOnly=%v Secure=%v SameSite=%q", c.HTTPOnly, c.Secure, c.SameSite)
	}
	if !b.has("#client-settings") || !b.has("#start-2fa") || b.has("#passcodes") {
		t.Errorf("account page with 2FA off: client-settings %v, start-2fa %v, passcodes %v",
			b.has("#client-settings"), b.has("#start-2fa"), b.has("#passcodes"))
	}
	_, imapPort, _ := net.SplitHostPort(p.IMAPS)
	settings := b.text("#client-settings")
	for _, want := range []string{portalMailHost, "alice", "IMAP", imapPort, "SSL/TLS"} {
		if !strings.Contains(settings, want) {
			t.Errorf("the client settings lack %q:\n%s", want, settings)
		}
	}
	b.screenshot("2-account-2fa-off")

	// 2. Start 2FA: the key and its QR code.
	b.press("#start-2fa")
	key := b.text("#totp-key")
	if !groupedKeyRE.MatchString(key) {
		t.Fatalf("#totp-key = %q, want 16 base32 characters in groups of four", key)
	}
	b.checkQR()
	b.screenshot("3-enroll")

	// A wrong code shows the enrollment page again, with the same key.
	enrollStep := currentStep()
	b.fill("#enroll-code", wrongCode(t, oathtool, key, enrollStep))
	b.press("#enroll")
	if !b.has("#error") || !b.has("#totp-key") {
		t.Fatalf("a wrong enrollment code: want the enrollment page with #error, got %s", b.location())
	}
	if got := b.text("#totp-key"); got != key {
		t.Fatalf("the key changed after a wrong code: %q, then %q", key, got)
	}
	if out, code := p.twofaStatus(t, "alice"); code != 1 {
		t.Errorf("2FA on after a wrong enrollment code: exit %d\n%s", code, out)
	}

	// The code oathtool computes from the shown key turns 2FA on.
	enrollStep = currentStep()
	enrollCode := totpCode(t, oathtool, key, enrollStep)
	b.fill("#enroll-code", enrollCode)
	b.press("#enroll")

	// 3. The one-time codes, shown once.
	codes := b.texts("li.one-time-code")
	if len(codes) != 10 {
		t.Fatalf("%d one-time codes (%q) on %s, want 10", len(codes), codes, b.location())
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if !oneTimeCodeRE.MatchString(c) || seen[c] {
			t.Errorf("one-time code %q: not xxxxx-xxxxx, or shown twice", c)
		}
		seen[c] = true
	}
	b.screenshot("4-one-time-codes")
	b.press("#done")
	b.onAccount(true)
	if b.open("/2fa/codes"); b.count("li.one-time-code") != 0 {
		t.Error("the one-time codes are shown a second time")
	}
	b.open("/account")
	if n := b.count("#passcodes tr[data-app]"); n != 0 || !b.has("#passcodes") {
		t.Errorf("a fresh 2FA account: #passcodes present %v with %d rows", b.has("#passcodes"), n)
	}
	if out, code := p.twofaStatus(t, "alice"); code != 0 || !strings.Contains(out, "authenticators (TOTP): 1 of at most 5") || !strings.Contains(out, "one-time codes left: 10\n") {
		t.Errorf("kanmon 2fa status after enrollment (exit %d; want TOTP enrolled, 10 one-time codes):\n%s", code, out)
	} else {
		t.Logf("kanmon 2fa status after enrollment:\n%s", out)
	}
	for _, c := range codes {
		if strings.Contains(readFileString(t, filepath.Join(p.Dir, "accounts.toml")), strings.ReplaceAll(c, "-", "")) {
			t.Errorf("a one-time code is stored in clear in the accounts file")
		}
	}
	if strings.Contains(readFileString(t, filepath.Join(p.Dir, "accounts.toml")), strings.ReplaceAll(key, " ", "")) {
		t.Errorf("the TOTP key is stored in clear in the accounts file")
	}

	// 4. A "Thunderbird" passcode, tried in the client before Done.
	b.fill(`form[action="/passcodes/add"] input[name="app"]`, "Thunderbird")
	b.press("#add-passcode")
	grouped := b.text("#passcode")
	if !groupedPasscodeRE.MatchString(grouped) {
		t.Fatalf("#passcode = %q, want ABCD EFGH IJKL MNOP", grouped)
	}
	if body := strings.ToLower(b.text("body")); !strings.Contains(body, "cannot be shown again") {
		t.Errorf("the passcode page does not state that the passcode cannot be shown again:\n%s", body)
	}
	b.screenshot("5-passcode")
	passcode := strings.ReplaceAll(grouped, " ", "")
	idle := openRevokeIdle(t, p.IMAPS, p.ClientTLS, "alice", passcode)
	b.press("#done")
	b.onAccount(true)
	if b.open("/passcodes/new"); b.has("#passcode") {
		t.Error("the passcode is shown a second time")
	}
	b.open("/account")
	if !b.has(`tr[data-app="Thunderbird"]`) {
		t.Fatal("no Thunderbird row in the passcode list")
	}
	if r := p.imapLogin(t, "alice", alicePassword); r != failedReply {
		t.Errorf("IMAP with the account password under 2FA: %q, want %q", r, failedReply)
	}
	b.open("/account")
	if row := b.text(`tr[data-app="Thunderbird"]`); !strings.Contains(row, "127.0.0.1") || !strings.Contains(strings.ToLower(row), "imap") {
		t.Errorf("the Thunderbird row lacks its last use (127.0.0.1, imap): %q", row)
	}
	b.screenshot("6-account-2fa-on")
	b.open("/account?lang=ja") // the longest page, in the seed's language
	b.onAccount(true)
	b.screenshot("6-account-2fa-on-ja")
	b.open("/account?lang=en")

	// 5. Delete it: the open IDLE session ends at once, and the passcode
	// no longer logs in.
	start := time.Now()
	b.press(`tr[data-app="Thunderbird"] .delete-passcode`)
	idle.revoked(start)
	b.onAccount(true)
	if b.has(`tr[data-app="Thunderbird"]`) {
		t.Error("the deleted passcode is still listed")
	}
	if r := p.imapLogin(t, "alice", passcode); r != failedReply {
		t.Errorf("IMAP with the deleted passcode: %q, want %q", r, failedReply)
	}

	// 6. Sign out; sign in with TOTP. The enrollment code, once used, is
	// refused; a code of a later step works.
	b.signOut()
	if currentStep() <= enrollStep+1 { // still inside the ±1 window
		b.signInFails("the enrollment code again", "alice", alicePassword, enrollCode)
	} else {
		t.Log("the enrollment code's window has passed; replay not checked")
	}
	waitForStep(t, enrollStep+1)
	b.signIn("alice", alicePassword, totpCode(t, oathtool, key, currentStep()))
	b.onAccount(true)
	b.signOut()

	// A one-time code works once.
	b.signIn("alice", alicePassword, codes[0])
	b.onAccount(true)
	b.signOut()
	failure := b.signInFails("a used one-time code", "alice", alicePassword, codes[0])
	b.screenshot("7-signin-error")
	if got := b.signInFails("no second factor", "alice", alicePassword, ""); got != failure {
		t.Errorf("failure messages differ: %q and %q", failure, got)
	}

	// 7. Turn 2FA off with a one-time code (typed in capitals without the
	// hyphen, as a user might copy it), after signing in with another one.
	b.signIn("alice", alicePassword, strings.ToUpper(strings.ReplaceAll(codes[1], "-", "")))
	b.onAccount(true)
	if out, code := p.twofaStatus(t, "alice"); code != 0 || !strings.Contains(out, "one-time codes left: 8\n") {
		t.Errorf("kanmon 2fa status with 2 one-time codes used (exit %d; want 8 left):\n%s", code, out)
	}
	b.fill("#off-code", codes[2])
	b.press("#disable-2fa")
	b.onAccount(false)
	out, code := p.twofaStatus(t, "alice")
	if code != 1 || !strings.Contains(out, "does not have 2FA on") {
		t.Errorf("kanmon 2fa status after turning 2FA off: exit %d\n%s", code, out)
	}
	if r := p.imapLogin(t, "alice", alicePassword); !strings.HasPrefix(r, "OK") {
		t.Errorf("IMAP with the password after 2FA is off: %s", r)
	}

	p.stop(t)
	secrets := append([]string{alicePassword, key, strings.ReplaceAll(key, " ", ""), passcode, grouped, enrollCode}, codes...)
	for _, s := range secrets {
		if strings.Contains(p.log.String(), s) {
			t.Errorf("the serve log contains a secret (%d characters)", len(s))
		}
	}
}

// readFileString reads a whole file.
func readFileString(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// wrongCode is a 6-digit code that no step within the ±1 window accepts.
func wrongCode(t *testing.T, oathtool, key string, step int64) string {
	t.Helper()
	valid := map[string]bool{}
	for s := step - 2; s <= step+2; s++ {
		valid[totpCode(t, oathtool, key, s)] = true
	}
	for n := 0; ; n++ {
		if c := fmt.Sprintf("%06d", n*7919%1000000); !valid[c] {
			return c
		}
	}
}

// checkQR checks that the enrollment page's QR code has loaded in the
// browser and that /2fa/qr.png is a PNG for this session only.
func (b *browser) checkQR() {
	b.t.Helper()
	if src := b.attr("#totp-qr", "src"); src != "/2fa/qr.png" {
		b.t.Errorf("#totp-qr src=%q", src)
	}
	if alt := b.attr("#totp-qr", "alt"); alt == "" {
		b.t.Error("#totp-qr has no alt text")
	}
	width := browserRun(b, "QR natural width", chromedp.Evaluate[int](
		`(() => { const i = document.getElementById('totp-qr'); return i.complete ? i.naturalWidth : -1 })()`))
	if width <= 0 {
		b.t.Fatalf("the QR image did not load (naturalWidth %d)", width)
	}

	cookie := b.sessionCookie()
	get := func(withCookie bool) *http.Response {
		req, err := http.NewRequest(http.MethodGet, b.base+"/2fa/qr.png", nil)
		if err != nil {
			b.t.Fatal(err)
		}
		if withCookie {
			req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
		}
		resp, err := b.client.Do(req)
		if err != nil {
			b.t.Fatal(err)
		}
		return resp
	}
	resp := get(true)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" {
		b.t.Errorf("GET /2fa/qr.png: %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		b.t.Errorf("the QR code (a secret) is cacheable: Cache-Control %q", cc)
	}
	img, err := png.Decode(bytes.NewReader(body))
	if err != nil {
		b.t.Fatalf("/2fa/qr.png is not a PNG: %v (% x…)", err, body[:min(len(body), 8)])
	}
	if w := img.Bounds().Dx(); w != width {
		b.t.Errorf("PNG width %d, the browser's naturalWidth %d", w, width)
	}
	if resp := get(false); resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		b.t.Error("GET /2fa/qr.png without the session cookie: 200")
	} else {
		resp.Body.Close()
	}
}
