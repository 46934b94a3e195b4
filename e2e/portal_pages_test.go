package e2e

// The portal's pages in a real browser, beyond the journey: the two
// languages, the one failure message, CSRF and the security headers.

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
)

// The sign-in page in Japanese and English, and the one failure message:
// a wrong password, an unknown user, an account whose 2FA an admin turned
// on without an authenticator, and an app passcode typed as the password
// all get the same #error.
func TestE2EPortalLanguageAndFailures(t *testing.T) {
	requireChromium(t)
	var bobPasscode string
	p := startPortalServer(t, func(bin, cfg string) {
		mustRun(t, bin, "2fa", "enable", "-config", cfg, "bob")
		bobPasscode = cliAddPasscode(t, bin, "-config", cfg, "bob", "Thunderbird")
	})
	b := startBrowser(t, "https://"+p.PortalAddr, p.CertPEM)

	// The browser's Accept-Language chooses the language until the user
	// switches; the switch is remembered.
	lang := func() string { return b.attr("html", "lang") }
	b.open("/signin")
	if got := lang(); got != "en" {
		t.Errorf("Accept-Language en-US: <html lang=%q>", got)
	}
	english := b.text("#signin")
	b.setHeaders(network.Headers{"Accept-Language": "ja,en;q=0.5"})
	b.open("/signin")
	if got := lang(); got != "ja" {
		t.Errorf("Accept-Language ja: <html lang=%q>", got)
	}
	b.setHeaders(network.Headers{})
	b.open("/signin?lang=ja")
	if got := lang(); got != "ja" {
		t.Fatalf("/signin?lang=ja: <html lang=%q>", got)
	}
	if japanese := b.text("#signin"); japanese == english || !hasJapanese(japanese) {
		t.Errorf("the sign-in button in Japanese: %q (English %q)", japanese, english)
	}
	b.screenshot("8-signin-ja")
	b.open("/signin")
	if got := lang(); got != "ja" {
		t.Errorf("after ?lang=ja, /signin is <html lang=%q>; want the choice kept", got)
	}
	jaFailure := b.signInFails("a wrong password (ja)", "alice", "wrong-"+alicePassword, "")
	if !hasJapanese(jaFailure) {
		t.Errorf("the failure message in Japanese: %q", jaFailure)
	}
	b.open("/signin?lang=en")
	if got := lang(); got != "en" {
		t.Fatalf("/signin?lang=en: <html lang=%q>", got)
	}

	failure := b.signInFails("a wrong password", "alice", "wrong-"+alicePassword, "")
	if failure == "" || failure == jaFailure {
		t.Errorf("the English failure message: %q (Japanese %q)", failure, jaFailure)
	}
	for _, c := range []struct{ what, user, password string }{
		{"an unknown user", "nobody", alicePassword},
		{"2FA on without an authenticator", "bob", bobPassword},
		{"an app passcode as the password", "bob", bobPasscode},
	} {
		if got := b.signInFails(c.what, c.user, c.password, ""); got != failure {
			t.Errorf("%s: #error %q, want the same as for a wrong password, %q", c.what, got, failure)
		}
	}
	// The same sign-ins still work in a mail client, and a good one on
	// the portal still signs in.
	if r := p.imapLogin(t, "bob", bobPasscode); !strings.HasPrefix(r, "OK") {
		t.Errorf("IMAP with bob's passcode: %s", r)
	}
	b.signIn("alice", alicePassword, "")
	b.onAccount(false)

	// A POST with the session cookie but without the session's CSRF
	// token (what a forged cross-site form would send, were the cookie
	// not SameSite=Strict) is refused and changes nothing.
	for _, token := range []string{"", "forged-token"} {
		if st := b.postWithCookie("/2fa/start", url.Values{"csrf": {token}}); st != http.StatusForbidden {
			t.Errorf("POST /2fa/start with csrf=%q: %d, want 403", token, st)
		}
	}
	b.open("/account")
	b.onAccount(false)
}

// The headers the contract puts on every page, as the browser got them.
func TestE2EPortalHeaders(t *testing.T) {
	requireChromium(t)
	p := startPortalServer(t, nil)
	b := startBrowser(t, "https://"+p.PortalAddr, p.CertPEM)
	want := map[string]string{
		"content-security-policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"x-frame-options":         "DENY",
		"x-content-type-options":  "nosniff",
		"referrer-policy":         "no-referrer",
		"cache-control":           "no-store",
	}
	for _, path := range []string{"/signin", "/signin?lang=ja", "/nowhere"} {
		resp := b.openResponse(path)
		got := map[string]string{}
		for k, v := range resp.Headers {
			got[strings.ToLower(k)] = fmt.Sprint(v)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("GET %s: %s: %q, want %q", path, k, got[k], v)
			}
		}
	}
}

// hasJapanese reports whether s has a kana or kanji character.
func hasJapanese(s string) bool {
	for _, r := range s {
		if (r >= 0x3040 && r <= 0x30ff) || (r >= 0x4e00 && r <= 0x9fff) {
			return true
		}
	}
	return false
}
