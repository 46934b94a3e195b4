package portal_test

import (
	"bytes"
	"image/png"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/otp"
)

// The enrollment journey: the key and QR code come from a secret kept in
// the session only; a wrong code shows the page again; a right one
// (computed with otp.Code from the key on the page) turns 2FA on, shows
// ten one-time codes once, and reloads the server.
func TestEnrollment(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.get("/account")
	c.get("/2fa/enroll").wantRedirect("/account") // nothing pending yet
	c.get("/2fa/qr.png").want(http.StatusNotFound)

	page := c.follow(c.post("/2fa/start", nil).wantRedirect("/2fa/enroll")).want(http.StatusOK,
		`<img id="totp-qr" src="/2fa/qr.png"`, `alt="QR code for your authenticator app"`,
		`<form method="post" action="/2fa/enroll"`, `id="enroll-code"`, `name="code"`, `id="enroll"`)
	key := page.text("totp-key")
	if !regexp.MustCompile(`^[A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4}$`).MatchString(key) {
		t.Fatalf("#totp-key = %q", key)
	}
	secret, err := otp.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(w.accounts(), "carol") {
		t.Fatal("carol is in the accounts file before proving the key")
	}

	// The QR code is the otpauth URI of that very secret, for this
	// session only.
	qr := c.get("/2fa/qr.png").want(http.StatusOK)
	if _, err := png.Decode(bytes.NewReader([]byte(qr.body))); err != nil {
		t.Fatalf("qr.png: %v", err)
	}
	want, err := otp.QRPNG(otp.URI(issuer, "carol", secret), 256)
	if err != nil {
		t.Fatal(err)
	}
	if qr.body != string(want) {
		t.Error("qr.png is not the QR code of the key on the page")
	}
	w.client(inside).get("/2fa/qr.png").wantRedirect("/signin")

	// A wrong code: the same page, the same key, an error.
	again := c.post("/2fa/enroll", form("code", wrongCodeN(secret, w.now(), 0))).want(http.StatusOK, `id="totp-qr"`)
	if again.text("totp-key") != key || !strings.Contains(again.text("error"), "That code is not right") {
		t.Errorf("after a wrong code: key %q, error %q", again.text("totp-key"), again.text("error"))
	}
	if w.reloads.Load() != 0 || strings.Contains(w.accounts(), "carol") {
		t.Fatal("a wrong code turned 2FA on")
	}

	codes := c.follow(c.post("/2fa/enroll", form("code", otp.Code(secret, w.now()))).wantRedirect("/2fa/codes")).
		want(http.StatusOK, "they are shown only this once", `id="done"`).all("one-time-code")
	if len(codes) != 10 {
		t.Fatalf("%d one-time codes: %q", len(codes), codes)
	}
	for _, code := range codes {
		if !regexp.MustCompile(`^[a-z0-9]{5}-[a-z0-9]{5}$`).MatchString(code) {
			t.Errorf("one-time code %q", code)
		}
	}
	if w.reloads.Load() != 1 {
		t.Errorf("%d reloads after enrollment, want 1", w.reloads.Load())
	}
	accts := w.accounts()
	if !strings.Contains(accts, `user = "carol"`) || !strings.Contains(accts, "totp = ") ||
		strings.Contains(accts, strings.ReplaceAll(key, " ", "")) {
		t.Errorf("accounts file after enrollment:\n%s", accts)
	}
	w.wantLog("2FA turned on: authenticator registered", "user=carol")

	// A reload of the page shows the codes again until Done; after it,
	// they are gone for good, and so is the pending secret.
	c.get("/2fa/codes").want(http.StatusOK, codes[0])
	c.get("/account").want(http.StatusOK, `id="twofa-status" data-on="true"`, `id="passcodes"`, `id="disable-2fa"`, "One-time codes left: 10.").
		lacks(`id="start-2fa"`, codes[0])
	c.get("/2fa/codes").wantRedirect("/account")
	c.get("/2fa/qr.png").want(http.StatusNotFound)

	// Enrolling again is refused while an authenticator is registered.
	c.post("/2fa/start", nil).wantRedirect("/account")
	if got := c.get("/account").text("error"); !strings.Contains(got, "already on") {
		t.Errorf("second enrollment: %q", got)
	}
	noSecrets(t, w.logs.String(), carolPW, key, strings.Join(codes, " "))
}

// Turning 2FA off needs a current code or a one-time code; wrong codes
// count in the lockout counters. It removes the account (authenticator,
// one-time codes, passcodes) and reloads.
func TestTurnOff(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	secret, codes := c.enroll()
	c.get("/account")
	c.follow(c.post("/passcodes/add", form("app", "Thunderbird")))
	c.get("/account")
	reloads := w.reloads.Load()

	c.post("/2fa/disable", form("code", wrongCodeN(secret, w.now(), 1))).wantRedirect("/account")
	if got := c.get("/account").want(http.StatusOK, `data-on="true"`).text("error"); !strings.Contains(got, "still on") {
		t.Errorf("wrong code: %q", got)
	}
	w.wantLog("turning 2FA off refused", `reason="wrong, used or replayed code"`, "lockout.counted=true")
	if w.reloads.Load() != reloads {
		t.Error("a refused turn-off reloaded")
	}

	c.post("/2fa/disable", form("code", codes[3])).wantRedirect("/account")
	r := c.get("/account").want(http.StatusOK, `id="twofa-status" data-on="false"`, `id="start-2fa"`).lacks(`id="passcodes"`)
	if got := r.text("notice"); !strings.Contains(got, "is off") {
		t.Errorf("notice: %q", got)
	}
	if strings.Contains(w.accounts(), "carol") {
		t.Errorf("carol is still in the accounts file:\n%s", w.accounts())
	}
	if w.reloads.Load() != reloads+1 {
		t.Errorf("reloads: %d, want %d", w.reloads.Load(), reloads+1)
	}
	if w.rt.Load().Policy.TwoFA("carol") {
		t.Error("the policy in force still has 2FA on for carol")
	}
	w.wantLog("2FA turned off", `second_factor="one-time code"`, "passcodes_removed=1")
}
