package portal_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/otp"
)

// failedText is the one message of every failed sign-in.
const failedText = "Sign-in failed. Check your user name, password and code, and try again."

// An account without 2FA signs in with its password from the campus; the
// session starts at sign-in (the form keeps nothing on the server); the
// account page offers enrollment and shows the client settings.
func TestSignInPassword(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.get("/").wantRedirect("/signin")
	c.get("/signin").want(http.StatusOK,
		`<form method="post" action="/signin"`, `name="user"`, `name="password"`, `name="code"`, `id="signin"`, `name="csrf"`)
	if c.session() != "" {
		t.Fatal("GET /signin set a session cookie")
	}
	r := c.post("/signin", form("user", "carol", "password", carolPW, "code", "")).wantRedirect("/account")
	if c.session() == "" {
		t.Error("no session after sign-in")
	}
	if c.cookies[signinCookie] != nil {
		t.Error("the sign-in form's cookie outlived the sign-in")
	}
	wantSessionCookie(t, r)
	before := c.session()
	c.get("/").wantRedirect("/account")
	c.get("/signin").wantRedirect("/account")
	c.get("/account").want(http.StatusOK,
		`id="twofa-status" data-on="false"`, `action="/2fa/start"`, `id="start-2fa"`, `id="client-settings"`, `id="signout"`).
		lacks(`id="passcodes"`, `id="disable-2fa"`)
	w.wantLog(`msg=login proto=portal client=10.1.2.3 user=carol second_factor=none`)

	// After sign-out, the old session id is dead.
	c.post("/signout", nil).wantRedirect("/signin")
	old := w.client(inside)
	old.cookies[sessionCookie] = &http.Cookie{Name: sessionCookie, Value: before}
	old.get("/account").wantRedirect("/signin")
}

// Every failed sign-in shows the same message, whatever went wrong; the
// log has the reason. An account without 2FA from outside the campus is
// refused without asking the backend, and an app passcode is no password.
func TestSignInFailuresUniform(t *testing.T) {
	w := newWorld(t)
	a := w.client(inside)
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, codes := a.enroll()
	w.advance(otp.Period)
	a.get("/account")
	pc := a.post("/passcodes/add", form("app", "Thunderbird"))
	passcode := strings.ReplaceAll(a.follow(pc).text("passcode"), " ", "")

	cases := []struct {
		name, ip, user, password, code, reason string
		backend                                bool // whether the backend is asked
	}{
		{"wrong password", inside, "carol", "wrong-pw", "", "reason=\"backend rejected the password\"", true},
		{"unknown user", inside, "nobody", "some-pw", "", "reason=\"backend rejected the password\"", true},
		{"no 2FA, outside the campus", outside, "carol", carolPW, "", "reason=\"account without 2FA outside trusted_networks\"", false},
		{"2FA by the admin, no authenticator", inside, "bob", bobPW, "123456", "reason=\"2FA account without an authenticator", true},
		{"2FA without a code", "203.0.113.11", "alice", alicePW, "", "reason=\"2FA account without a code\"", true},
		{"2FA with a wrong code", "203.0.113.12", "alice", alicePW, wrongCodeN(secret, w.now(), 0), "reason=\"wrong, used or replayed code\"", true},
		{"2FA with a made-up one-time code", "203.0.113.13", "alice", alicePW, "abcde-fghij", "reason=\"wrong, used or replayed code\"", true},
		{"an app passcode as the password", "203.0.113.14", "alice", passcode, otp.Code(secret, w.now()), "reason=\"backend rejected the password\"", true},
		{"empty password", inside, "carol", "", "", "reason=\"empty password\"", false},
		{"bad user name", inside, " carol", carolPW, "", "reason=\"invalid user name\"", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := w.client(tc.ip)
			before := w.checks.Load()
			r := c.signIn(tc.user, tc.password, tc.code).want(http.StatusOK, `id="signin"`, `name="csrf"`)
			if got := r.text("error"); got != failedText {
				t.Errorf("#error = %q, want %q", got, failedText)
			}
			if asked := w.checks.Load() > before; asked != tc.backend {
				t.Errorf("backend asked: %v, want %v", asked, tc.backend)
			}
			c.get("/account").wantRedirect("/signin")
			w.wantLog(`msg="login failed" proto=portal client=` + tc.ip + ` user=`)
			w.wantLog(tc.reason)
		})
	}
	// The right code from outside does work for a 2FA account.
	w.client(outside).signIn("alice", alicePW, otp.Code(secret, w.now())).wantRedirect("/account")
	noSecrets(t, w.logs.String(), alicePW, bobPW, carolPW, passcode, otp.FormatKey(secret), strings.Join(codes, " "))
}

// A TOTP code works once: the enrollment code cannot sign in, nor can a
// code used to sign in before.
func TestReplayedTOTPRefused(t *testing.T) {
	w := newWorld(t)
	a := w.client(inside)
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, _ := a.enroll()
	enrollCode := otp.Code(secret, w.now())
	a.post("/signout", nil).wantRedirect("/signin")

	if got := a.signIn("alice", alicePW, enrollCode).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("the enrollment code again: %q", got)
	}
	w.advance(otp.Period)
	code := otp.Code(secret, w.now())
	a.signIn("alice", alicePW, code).wantRedirect("/account")
	w.wantLog("second_factor=totp")
	a.get("/account").want(http.StatusOK)
	a.post("/signout", nil).wantRedirect("/signin")
	if got := a.signIn("alice", alicePW, code).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("a used code again: %q", got)
	}
	w.wantLog(`reason="wrong, used or replayed code"`)
}

// A one-time code signs in once, in any case, with or without its hyphen.
func TestOneTimeCodeSingleUse(t *testing.T) {
	w := newWorld(t)
	a := w.client(inside)
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	_, codes := a.enroll()
	if len(codes) != 10 {
		t.Fatalf("%d one-time codes: %q", len(codes), codes)
	}
	a.post("/signout", nil).wantRedirect("/signin")
	typed := strings.ToUpper(strings.ReplaceAll(codes[0], "-", ""))
	a.signIn("alice", alicePW, typed).wantRedirect("/account")
	w.wantLog(`second_factor="one-time code"`)
	a.follow(a.get("/")).want(http.StatusOK, "One-time codes left: 9.")
	a.post("/signout", nil).wantRedirect("/signin")
	if got := a.signIn("alice", alicePW, codes[0]).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("a used one-time code: %q", got)
	}
}

// Wrong TOTP codes count in the lockout counters that mail logins use:
// after the threshold the account+IP is locked, and even the right code
// fails (with the same message) until the lock ends.
func TestLockoutOnWrongCodes(t *testing.T) {
	w := newWorld(t)
	a := w.client(inside)
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, _ := a.enroll()
	a.post("/signout", nil).wantRedirect("/signin")
	w.advance(otp.Period)

	m := w.client(outside)
	for i := range accountIPThreshold {
		code := wrongCodeN(secret, w.now(), i)
		if got := m.signIn("alice", alicePW, code).want(http.StatusOK).text("error"); got != failedText {
			t.Fatalf("wrong code %d: %q", i, got)
		}
	}
	w.wantLog("lockout.counted=true", "lockout.account_ip=4", "lockout.locked=account+ip")
	before := w.checks.Load()
	if got := m.signIn("alice", alicePW, otp.Code(secret, w.now())).want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("right code while locked: %q", got)
	}
	if w.checks.Load() != before {
		t.Error("the backend was asked while the account was locked")
	}
	w.wantLog(`reason="locked: account+ip"`)
	// Another address (not locked) still gets in.
	w.client(inside).signIn("alice", alicePW, otp.Code(secret, w.now())).wantRedirect("/account")
}

// wrongCodeN is the n-th distinct wrong code (distinct, so that each one
// counts rather than being a repeated stale secret).
func wrongCodeN(secret []byte, now time.Time, n int) string {
	found := 0
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", i)
		if _, ok := otp.Verify(secret, c, now); ok {
			continue
		}
		if found == n {
			return c
		}
		found++
	}
}

// The backend being down is not a failed sign-in: another page says so,
// and nothing is counted.
func TestSignInBackendDown(t *testing.T) {
	w := newWorld(t)
	w.down.Store(true)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").want(http.StatusServiceUnavailable, "Temporarily unavailable").lacks(failedText)
	w.wantLog("backend unavailable")
	if strings.Contains(w.logs.String(), "lockout.counted") {
		t.Error("an unavailable backend was counted as a failure")
	}
}

// noSecrets fails if the log holds any secret, raw or without spaces.
func noSecrets(t *testing.T, log string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, f := range append([]string{s, strings.ReplaceAll(s, " ", "")}, strings.Fields(s)...) {
			if len(f) >= 6 && strings.Contains(log, f) {
				t.Errorf("the log contains a secret: %q", f)
			}
		}
	}
}
