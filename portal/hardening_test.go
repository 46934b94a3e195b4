package portal_test

// The security review's findings, each as the transcript that showed it.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/portal"
)

// minDelay sets the portal's least time for a failed sign-in.
func minDelay(d time.Duration) func(*portal.Options) {
	return func(o *portal.Options) { o.MinFailureDelay = d }
}

// timed returns how long fn took.
func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// A client that half-closes its connection in the middle of a sign-in
// cancels the request's context. The check runs to its end all the same:
// the wrong password is counted, the answer is the ordinary failure after
// the minimum delay, and enough of them lock the account, as always.
// (Before: the cancelled backend check was "unavailable", a quick 503,
// never counted: unlimited guessing, and a right password, which Dovecot
// accepts at once, answered differently from a wrong one.)
func TestSignInSurvivesClientGoingAway(t *testing.T) {
	const min = 150 * time.Millisecond
	w := newWorld(t, minDelay(min))
	w.rejectDelay.Store(int64(100 * time.Millisecond)) // Dovecot's auth_failure_delay, scaled down
	c := w.client(inside)
	for i := range accountIPThreshold {
		c.get("/signin").want(http.StatusOK)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel) // the client half-closes
		var r *response
		took := timed(func() { r = c.postCtx(ctx, "/signin", form("user", "carol", "password", fmt.Sprintf("guess-%d", i))) })
		cancel()
		r.want(http.StatusOK, `id="signin"`).lacks("Temporarily unavailable")
		if got := r.text("error"); got != failedText {
			t.Fatalf("attempt %d: %q", i, got)
		}
		if took < min {
			t.Errorf("attempt %d answered after %v, before the minimum %v", i, took, min)
		}
	}
	w.wantLog(`reason="backend rejected the password" lockout.counted=true`, "lockout.locked=account+ip")
	if strings.Contains(w.logs.String(), "backend unavailable") {
		t.Error("a client going away made the backend check fail")
	}
}

// A fault after the password was accepted (here the TOTP key is gone
// from state_dir) is the ordinary failure, after the minimum delay, and
// an ERROR in the log; never a 503, which would tell that the password
// was right. A fault before any password check (the lockout store
// closed) is a 503, but only after the minimum delay too.
func TestSignInFaultsAnswerUniformly(t *testing.T) {
	const min = 150 * time.Millisecond
	w := newWorld(t, minDelay(min))
	a := w.client(inside)
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, _ := a.enroll()
	a.post("/signout", nil).wantRedirect("/signin")
	w.advance(otp.Period)
	if err := os.Remove(filepath.Join(w.rt.Load().Config.StateDir, auth.TOTPKeyFileName)); err != nil {
		t.Fatal(err)
	}

	var r *response
	took := timed(func() { r = a.signIn("alice", alicePW, otp.Code(secret, w.now())) })
	r.want(http.StatusOK, `id="signin"`).lacks("Temporarily unavailable")
	if got := r.text("error"); got != failedText {
		t.Errorf("#error = %q", got)
	}
	if took < min {
		t.Errorf("answered after %v, before the minimum %v", took, min)
	}
	w.wantLog(`level=ERROR msg="sign-in failed: the second factor could not be checked"`)

	// The lockout store unavailable: 503, after the minimum delay, and
	// the backend is not asked.
	if err := w.guard.Close(); err != nil {
		t.Fatal(err)
	}
	before := w.checks.Load()
	took = timed(func() { r = w.client(inside).signIn("carol", carolPW, "") })
	r.want(http.StatusServiceUnavailable, "Temporarily unavailable")
	if took < min {
		t.Errorf("503 after %v, before the minimum %v", took, min)
	}
	if w.checks.Load() != before {
		t.Error("the backend was asked without the lockout check")
	}
}

// Every failed sign-in takes at least the minimum failure delay, so the
// time does not tell a wrong password (refused by the backend after its
// own delay) from a right password with a wrong or missing code (refused
// by the portal at once).
func TestFailureTimingUniform(t *testing.T) {
	const min = 300 * time.Millisecond
	w := newWorld(t, minDelay(min))
	w.rejectDelay.Store(int64(200 * time.Millisecond))
	a := w.client(inside)
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, _ := a.enroll()
	a.post("/signout", nil).wantRedirect("/signin")
	w.advance(otp.Period)

	cases := []struct{ name, ip, user, password, code string }{
		{"2FA account, wrong password", "203.0.113.21", "alice", "wrong-pw", otp.Code(secret, w.now())},
		{"2FA account, right password, wrong code", "203.0.113.22", "alice", alicePW, wrongCodeN(secret, w.now(), 0)},
		{"2FA account, right password, no code", "203.0.113.23", "alice", alicePW, ""},
		{"2FA account, right password, made-up one-time code", "203.0.113.24", "alice", alicePW, "abcde-fghij"},
		{"no 2FA, wrong password", inside, "carol", "wrong-pw", ""},
		{"no 2FA, outside the campus", outside, "carol", carolPW, ""},
		{"empty password", inside, "carol", "", ""},
	}
	for _, tc := range cases {
		c := w.client(tc.ip)
		var r *response
		took := timed(func() { r = c.signIn(tc.user, tc.password, tc.code) })
		if got := r.want(http.StatusOK).text("error"); got != failedText {
			t.Errorf("%s: %q", tc.name, got)
		}
		if took < min {
			t.Errorf("%s: answered after %v, before the minimum %v", tc.name, took, min)
		}
	}
	// A success is not held up.
	if took := timed(func() { w.client(inside).signIn("carol", carolPW, "").wantRedirect("/account") }); took >= min {
		t.Errorf("a successful sign-in took %v", took)
	}
}

// Turning 2FA on ends every other portal session of the account (in any
// spelling of the name): a session opened with the password alone before
// 2FA was on cannot go on to make passcodes. So does turning 2FA off, and
// an enrollment after a turn-off again ends the sessions opened while 2FA
// was off.
func TestOtherSessionsEndAtEnrollmentAndTurnOff(t *testing.T) {
	w := newWorld(t)
	a := w.client(outside) // the attacker, with carol's password, before 2FA (from the campus)
	a.ip = inside
	a.signIn("CAROL", carolPW, "").wantRedirect("/account")
	a.get("/account").want(http.StatusOK)
	staleCSRF := a.csrf

	b := w.client(inside) // carol herself
	b.signIn("carol", carolPW, "").wantRedirect("/account")
	secret, codes := b.enroll()
	w.wantLog("other_sessions_ended=1")

	a.get("/account").wantRedirect("/signin")
	a.post("/passcodes/add", form("app", "Evil", "csrf", staleCSRF)).want(http.StatusForbidden)
	if strings.Contains(w.accounts(), "Evil") {
		t.Fatal("the password-only session made a passcode after 2FA was turned on")
	}
	// The enrolling session itself goes on: it proved the authenticator.
	b.get("/account").want(http.StatusOK)
	b.follow(b.post("/passcodes/add", form("app", "Thunderbird"))).want(http.StatusOK, "App passcode for Thunderbird")

	// Another session signed in with a code; turning 2FA off ends it.
	w.advance(otp.Period)
	d := w.client(inside)
	d.signIn("carol", carolPW, otp.Code(secret, w.now())).wantRedirect("/account")
	b.get("/account")
	b.post("/2fa/disable", form("code", codes[0])).wantRedirect("/account")
	b.get("/account").want(http.StatusOK, `data-on="false"`)
	d.get("/account").wantRedirect("/signin")

	// 2FA off: a password-only session; enrolling again ends it.
	e := w.client(inside)
	e.signIn("carol", carolPW, "").wantRedirect("/account")
	e.get("/account").want(http.StatusOK)
	staleCSRF = e.csrf
	w.advance(otp.Period)
	b.enroll()
	e.get("/account").wantRedirect("/signin")
	e.post("/passcodes/add", form("app", "Evil", "csrf", staleCSRF)).want(http.StatusForbidden)
	b.get("/account").want(http.StatusOK, `data-on="true"`)
}

// A session that signed in with the password alone, while 2FA was off,
// may not add or delete passcodes, start an enrollment or turn 2FA off
// once the account has 2FA on by some other way (here another process
// enrolls it in the accounts file): it is ended and sent to sign in
// again, where the code is asked for.
func TestPasswordOnlySessionSignsInAgain(t *testing.T) {
	w := newWorld(t)
	sessions := make([]*client, 4)
	for i := range sessions {
		sessions[i] = w.client(inside)
		sessions[i].signIn("carol", carolPW, "").wantRedirect("/account")
		sessions[i].get("/account").want(http.StatusOK)
	}

	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	rt := w.rt.Load()
	codes, err := auth.EnrollTOTP(auth.OpenStore(rt.Config.Accounts), rt.Config.StateDir, "carol", secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.AddPasscode(auth.OpenStore(rt.Config.Accounts), rt.Config.StateDir, "carol", "iPhone"); err != nil {
		t.Fatal(err)
	}

	sessions[0].post("/passcodes/add", form("app", "Thunderbird")).wantRedirect("/signin")
	sessions[1].post("/passcodes/delete", form("app", "iPhone")).wantRedirect("/signin")
	sessions[2].post("/2fa/disable", form("code", codes[0])).wantRedirect("/signin")
	sessions[3].post("/2fa/start", nil).wantRedirect("/signin")
	accts := w.accounts()
	if strings.Contains(accts, "Thunderbird") || !strings.Contains(accts, "iPhone") || !strings.Contains(accts, "totp = ") {
		t.Fatalf("a password-only session changed a 2FA account:\n%s", accts)
	}
	for _, c := range sessions {
		c.get("/account").wantRedirect("/signin")
	}
	w.wantLog("session ended: signed in without a second factor")

	// The password alone no longer signs in; with a code, the user may
	// make passcodes.
	c := sessions[0]
	if got := c.signIn("carol", carolPW, "").want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("password only: %q", got)
	}
	c.signIn("carol", carolPW, otp.Code(secret, w.now())).wantRedirect("/account")
	c.get("/account")
	c.follow(c.post("/passcodes/add", form("app", "Thunderbird"))).want(http.StatusOK, "App passcode for Thunderbird")
}

// The sign-in form keeps nothing on the server: its CSRF token is bound
// to a short-lived __Host- cookie. So a flood of form requests (as many as
// the session store holds) cannot push out a real user's form, nor fill
// the store; the token is bound to its own cookie and expires.
func TestSignInFormStateless(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	r := c.get("/signin").want(http.StatusOK)
	if c.session() != "" {
		t.Fatal("the sign-in form started a session")
	}
	var k *http.Cookie
	for _, x := range r.set {
		if x.Name == signinCookie {
			k = x
		}
	}
	switch {
	case k == nil:
		t.Fatalf("GET /signin set no %s cookie: %v", signinCookie, r.set)
	case !k.HttpOnly || !k.Secure || k.SameSite != http.SameSiteStrictMode || k.Path != "/" || k.Domain != "":
		t.Errorf("sign-in cookie: HttpOnly=%v Secure=%v SameSite=%v Path=%q Domain=%q", k.HttpOnly, k.Secure, k.SameSite, k.Path, k.Domain)
	case k.MaxAge <= 0 || k.MaxAge > 3600:
		t.Errorf("sign-in cookie: Max-Age %d, want short-lived", k.MaxAge)
	}
	if strings.Contains(c.csrf, k.Value) || strings.Contains(k.Value, c.csrf) {
		t.Error("the form's token is the cookie itself, not bound to a server key")
	}

	// The flood: cookieless form requests, each a would-be session before,
	// and all newer than the user's form.
	w.advance(time.Second)
	for range portal.MaxSessions {
		if r := w.client("198.51.100.7").get("/signin"); r.status != http.StatusOK {
			t.Fatalf("GET /signin in the flood: %d", r.status)
		}
	}
	c.post("/signin", form("user", "carol", "password", carolPW)).wantRedirect("/account")

	// A token only works with its own cookie.
	x, y := w.client(inside), w.client(inside)
	x.get("/signin")
	y.get("/signin")
	x.csrf = y.csrf
	x.post("/signin", form("user", "carol", "password", carolPW)).want(http.StatusForbidden)
	// The cookie alone, without the token, is refused too.
	y.post("/signin", form("user", "carol", "password", carolPW, "csrf", "")).want(http.StatusForbidden)
	// A form left open past its lifetime has expired.
	w.advance(61 * time.Minute)
	y.post("/signin", form("user", "carol", "password", carolPW)).want(http.StatusForbidden, "The form has expired")
	y.get("/signin")
	y.post("/signin", form("user", "carol", "password", carolPW)).wantRedirect("/account")
	if w.checks.Load() != 2 {
		t.Errorf("%d backend checks, want 2 (refused forms never reach it)", w.checks.Load())
	}
}

// One account holds at most a few sessions: its next sign-in ends its
// least recently used one, so signing in over and over fills nothing.
func TestSessionsPerUserCapped(t *testing.T) {
	w := newWorld(t)
	browsers := make([]*client, portal.MaxSessionsPerUser+1)
	for i := range browsers {
		browsers[i] = w.client(inside)
		browsers[i].signIn("carol", carolPW, "").wantRedirect("/account")
		w.advance(time.Second)
	}
	browsers[0].get("/account").wantRedirect("/signin")
	for _, b := range browsers[1:] {
		b.get("/account").want(http.StatusOK)
	}
	// Someone else signs in as usual.
	w.client(inside).signIn("alice", alicePW, "").wantRedirect("/account")
}

// A user field that is no valid user name (a password typed into the
// wrong field, with a stray space) is not written to the log.
func TestInvalidUserNotLogged(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	if got := c.signIn(" "+alicePW, "x", "").want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("#error = %q", got)
	}
	w.wantLog(`msg="login failed" proto=portal client=10.1.2.3 user=(invalid) reason="invalid user name"`)
	noSecrets(t, w.logs.String(), alicePW)
}

// At most MaxConcurrentChecks password checks run at the backend at once.
// One more waits for a place; if its client goes away first, it gets the
// "unavailable" page (after the minimum delay) without reaching the
// backend. A waiter that gets a place goes on as usual.
func TestConcurrentChecksCapped(t *testing.T) {
	const min = 50 * time.Millisecond
	w := newWorld(t, minDelay(min))
	gate := make(chan struct{})
	w.gate.Store(&gate)

	n := portal.MaxConcurrentChecks
	statuses := make(chan int, n+1)
	var wg sync.WaitGroup
	start := func(c *client) {
		c.get("/signin")
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := c.postCtx(context.Background(), "/signin", form("user", "carol", "password", carolPW))
			statuses <- r.status
		}()
	}
	for range n {
		start(w.client(inside))
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.checks.Load() < int32(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d checks started, want %d", w.checks.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}

	// One more, whose client gives up.
	late := w.client(inside)
	late.get("/signin")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	var r *response
	took := timed(func() { r = late.postCtx(ctx, "/signin", form("user", "carol", "password", carolPW)) })
	cancel()
	r.want(http.StatusServiceUnavailable, "Temporarily unavailable")
	if took < min {
		t.Errorf("503 after %v, before the minimum %v", took, min)
	}
	if got := w.checks.Load(); got != int32(n) {
		t.Errorf("%d checks at the backend, want %d", got, n)
	}
	w.wantLog("too many sign-ins at the backend at once")

	// One more that waits, and gets a place when the backend answers.
	start(w.client(inside))
	time.Sleep(20 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusSeeOther {
			t.Errorf("a sign-in at the cap: %d, want 303", s)
		}
	}
	if got := w.checks.Load(); got != int32(n+1) {
		t.Errorf("%d checks at the backend, want %d", got, n+1)
	}
}

// Whether an account has 2FA comes from the accounts file, not from the
// policy in force, which a failed reload can leave stale: with a policy
// from before alice's enrollment, her password alone still does not sign
// in. And when a reload names another accounts file, the portal reads
// that one.
func TestSignInReadsAccountsFile(t *testing.T) {
	w := newWorld(t)
	stale := w.rt.Load()
	a := w.client(inside)
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	secret, _ := a.enroll()
	a.post("/signout", nil).wantRedirect("/signin")
	w.rt.Store(stale) // the reload after the enrollment failed
	if w.rt.Load().Policy.TwoFA("alice") {
		t.Fatal("the stale policy knows alice's 2FA")
	}

	if got := a.signIn("alice", alicePW, "").want(http.StatusOK).text("error"); got != failedText {
		t.Errorf("password only, stale policy: %q", got)
	}
	w.wantLog(`reason="2FA account without a code"`)
	w.advance(otp.Period)
	a.signIn("alice", alicePW, otp.Code(secret, w.now())).wantRedirect("/account")
	w.wantLog("second_factor=totp")
	a.get("/account").want(http.StatusOK)
	a.post("/signout", nil).wantRedirect("/signin")

	// Another accounts file, in which alice has no 2FA.
	cfg, err := os.ReadFile(w.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), `accounts = "accounts.toml"`, `accounts = "other-accounts.toml"`, 1))
	if err := os.WriteFile(w.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.reload(); err != nil {
		t.Fatal(err)
	}
	a.signIn("alice", alicePW, "").wantRedirect("/account")
	a.get("/account").want(http.StatusOK, `data-on="false"`)
}

// The default least time of a failed sign-in is what the docs say.
func TestMinFailureDelayDefault(t *testing.T) {
	if got := portal.DefaultMinFailureDelay; got != 3*time.Second {
		t.Errorf("minFailureDelay = %v, want 3s", got)
	}
}
