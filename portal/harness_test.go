package portal_test

// The harness of the portal tests: the portal handler over a real config,
// accounts file, state directory and lockout database in a temp dir, with
// a fake backend password check, an injected clock, a counting reload, and
// a browser-like client that keeps cookies and the page's CSRF token.
// Tests read as transcripts:
//
//	c := w.client("10.1.2.3")
//	c.get("/signin").want(200, `id="signin"`)
//	c.post("/signin", form("user", "carol", "password", carolPW)).wantRedirect("/account")

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/fakeclock"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/portal"
	"github.com/kanmon-mail/kanmon/proxy"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// The test world's accounts. The secrets are distinctive, so that a leak
// into the log is easy to spot.
const (
	alicePW = "alice-pw-Qm47" // alice: 2FA with an authenticator (enrolled by the test)
	bobPW   = "bob-pw-Vx92"   // bob: 2FA turned on by the admin, no authenticator
	carolPW = "carol-pw-Hd15" // carol: no 2FA

	inside  = "10.1.2.3"    // in trusted_networks
	outside = "203.0.113.9" // not

	issuer   = "Test University"
	mailHost = "mail.example.edu"
)

// accountIPThreshold is the world's lockout threshold per account and IP.
const accountIPThreshold = 4

// sessionCookie is the portal's session cookie.
const sessionCookie = "__Host-kanmon_portal"

// signinCookie holds the sign-in form's token.
const signinCookie = "__Host-kanmon_signin"

// worldMinFailureDelay is the world's least time for a failed sign-in
// (the real one, 3 s, would make every test slow).
const worldMinFailureDelay = time.Millisecond

// world is one portal with its files.
type world struct {
	t       *testing.T
	dir     string
	cfgPath string
	rt      atomic.Pointer[proxy.Generation]
	guard   *lockout.Guard
	srv     *portal.Server
	opts    portal.Options // srv's, for more nodes over the same files
	logs    *syncbuf.Buffer
	reloads atomic.Int32
	checks  atomic.Int32 // backend contacts (password checks)
	down    atomic.Bool  // the backend is unavailable
	// rejectDelay is how long the backend takes to refuse a wrong
	// password (Dovecot's auth_failure_delay); a right one is answered
	// at once.
	rejectDelay atomic.Int64
	// gate, when set, holds every password check until it is closed.
	gate    atomic.Pointer[chan struct{}]
	lastUse atomic.Pointer[map[string]auth.LastUse]
	clock   *fakeclock.Clock
}

// worldConfig is the world's config file (%d: the lockout threshold). The
// backends are never dialled: the password check is faked.
const worldConfig = `state_dir = "state"
accounts = "accounts.toml"
trusted_networks = ["10.0.0.0/8"]
require_2fa_outside = true

[tls]
cert = "cert.pem"
key = "key.pem"

[[listener]]
protocol = "imap"
address = "0.0.0.0:993"
tls = "implicit"

[[listener]]
protocol = "imap"
address = "0.0.0.0:143"
tls = "starttls"

[[listener]]
protocol = "pop3"
address = "0.0.0.0:995"

[[listener]]
protocol = "submission"
address = "0.0.0.0:587"
tls = "starttls"

[backend.imap]
address = "127.0.0.1:1"
master_user = "kanmon"
master_password = "master-pw"

[backend.pop3]
address = "127.0.0.1:1"
master_user = "kanmon"
master_password = "master-pw"

[backend.submission]
address = "127.0.0.1:1"
master_user = "kanmon"
master_password = "master-pw"

[portal]
address = "127.0.0.1:8443"
issuer = "Test University"
mail_host = "mail.example.edu"

[lockout]
account_ip_threshold = %d
tarpit = "1ms"
tarpit_max = "4ms"
`

// newWorld writes the config and certificate, turns on bob's 2FA the
// admin's way, and starts the portal; each option may change the
// portal's Options.
func newWorld(t *testing.T, options ...func(*portal.Options)) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), logs: &syncbuf.Buffer{}, clock: fakeclock.New(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))}
	w.cfgPath = filepath.Join(w.dir, "kanmon.toml")
	if err := os.WriteFile(w.cfgPath, fmt.Appendf(nil, worldConfig, accountIPThreshold), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := selfsigned.New("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cert.WriteFiles(w.dir, "cert.pem", "key.pem"); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.EnableTwoFA(auth.OpenStore(filepath.Join(w.dir, "accounts.toml")), "bob"); err != nil {
		t.Fatal(err)
	}
	if err := w.reload(); err != nil {
		t.Fatal(err)
	}
	w.reloads.Store(0)
	rt := w.rt.Load()
	opts := proxy.LockoutOptions(rt.Config.Lockout)
	opts.Now = w.now
	w.guard, err = lockout.Open(filepath.Join(rt.Config.StateDir, proxy.LockoutDBName), rt.Pepper, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.guard.Close() })
	w.lastUse.Store(&map[string]auth.LastUse{})
	p := rt.Config.Portal
	po := portal.Options{
		Log: slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Generation: func() portal.Generation {
			g := w.rt.Load()
			return portal.Generation{Config: g.Config, Policy: g.Policy}
		},
		Guard:           w.guard,
		CheckPassword:   w.checkPassword,
		LastUse:         func() (map[string]auth.LastUse, error) { return *w.lastUse.Load(), nil },
		Reload:          func() error { w.reloads.Add(1); return w.reload() },
		Issuer:          p.Issuer,
		MailHost:        p.MailHost,
		SessionIdle:     p.SessionIdle.Duration,
		SessionMax:      p.SessionMax.Duration,
		Now:             w.now,
		MinFailureDelay: worldMinFailureDelay,
	}
	for _, o := range options {
		o(&po)
	}
	w.opts = po
	w.srv, err = portal.New(po)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// reload does what serve's reload does for the portal: load the config
// and accounts anew and swap them in.
func (w *world) reload() error {
	cfg, err := config.Load(w.cfgPath)
	if err != nil {
		return err
	}
	rt, err := proxy.LoadGeneration(cfg)
	if err != nil {
		return err
	}
	w.rt.Store(rt)
	return nil
}

// checkPassword is the fake backend: it knows the three accounts'
// passwords, their user names in any case (as Dovecot's default
// auth_username_format does). Like the real one, it gives up when ctx
// ends (the real one's dial and login are cut short).
func (w *world) checkPassword(ctx context.Context, user, password string, _ backend.ClientInfo) error {
	w.checks.Add(1)
	if g := w.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-ctx.Done():
			return fmt.Errorf("backend login: %w", ctx.Err())
		}
	}
	if w.down.Load() {
		return fmt.Errorf("backend dial failed: connection refused")
	}
	want := map[string]string{"alice": alicePW, "bob": bobPW, "carol": carolPW}[strings.ToLower(user)]
	if want == "" || password != want {
		t := time.NewTimer(time.Duration(w.rejectDelay.Load()))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("backend login: %w", ctx.Err())
		}
		return fmt.Errorf("%w: backend replied NO [AUTHENTICATIONFAILED]", backend.ErrPasswordRejected)
	}
	return nil
}

// now is the portal's clock.
func (w *world) now() time.Time { return w.clock.Now() }

// advance moves the clock on.
func (w *world) advance(d time.Duration) { w.clock.Add(d) }

// accounts returns the accounts file's text.
func (w *world) accounts() string {
	data, err := os.ReadFile(filepath.Join(w.dir, "accounts.toml"))
	if err != nil {
		w.t.Fatal(err)
	}
	return string(data)
}

// wantLog fails unless the log holds every fragment.
func (w *world) wantLog(fragments ...string) {
	w.t.Helper()
	for _, f := range fragments {
		if !strings.Contains(w.logs.String(), f) {
			w.t.Errorf("log lacks %q:\n%s", f, w.logs.String())
		}
	}
}

// client is one browser: the portal node it talks to, its address, its
// cookies, its language and the CSRF token of the last page it saw.
type client struct {
	w       *world
	srv     http.Handler // the portal node it talks to; nil: w.srv
	ip      string
	lang    string // Accept-Language
	cookies map[string]*http.Cookie
	csrf    string
}

func (w *world) client(ip string) *client {
	return &client{w: w, ip: ip, cookies: map[string]*http.Cookie{}}
}

// response is one answer, with helpers that fail the test.
type response struct {
	t      *testing.T
	req    string
	status int
	header http.Header
	body   string
	set    []*http.Cookie
}

// form builds url.Values from key, value pairs.
func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func (c *client) do(method, path string, body io.Reader) *response {
	c.w.t.Helper()
	return c.doCtx(context.Background(), method, path, body)
}

// doCtx is do with the request's context ctx: a client that goes away
// (or half-closes its connection) ends it.
func (c *client) doCtx(ctx context.Context, method, path string, body io.Reader) *response {
	c.w.t.Helper()
	req := httptest.NewRequestWithContext(ctx, method, "https://portal.example.edu"+path, body)
	req.RemoteAddr = c.ip + ":51000"
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.lang != "" {
		req.Header.Set("Accept-Language", c.lang)
	}
	for _, k := range c.cookies {
		req.AddCookie(&http.Cookie{Name: k.Name, Value: k.Value})
	}
	rec := httptest.NewRecorder()
	var srv http.Handler = c.w.srv
	if c.srv != nil {
		srv = c.srv
	}
	srv.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	r := &response{t: c.w.t, req: method + " " + path, status: res.StatusCode, header: res.Header, body: string(b), set: res.Cookies()}
	for _, k := range r.set {
		if k.MaxAge < 0 {
			delete(c.cookies, k.Name)
		} else {
			c.cookies[k.Name] = k
		}
	}
	if m := csrfRE.FindStringSubmatch(r.body); m != nil {
		c.csrf = m[1]
	}
	return r
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get fetches path.
func (c *client) get(path string) *response {
	c.w.t.Helper()
	return c.do(http.MethodGet, path, nil)
}

// post sends the form with the CSRF token of the last page seen.
func (c *client) post(path string, v url.Values) *response {
	c.w.t.Helper()
	return c.postCtx(context.Background(), path, v)
}

// postCtx is post with the request's context ctx.
func (c *client) postCtx(ctx context.Context, path string, v url.Values) *response {
	c.w.t.Helper()
	if v == nil {
		v = url.Values{}
	}
	if !v.Has("csrf") {
		v.Set("csrf", c.csrf)
	}
	return c.doCtx(ctx, http.MethodPost, path, strings.NewReader(v.Encode()))
}

// signIn fetches the form and submits it.
func (c *client) signIn(user, password, code string) *response {
	c.w.t.Helper()
	c.get("/signin").want(http.StatusOK, `id="signin"`)
	return c.post("/signin", form("user", user, "password", password, "code", code))
}

// follow GETs the redirect's target.
func (c *client) follow(r *response) *response {
	c.w.t.Helper()
	loc := r.header.Get("Location")
	if r.status != http.StatusSeeOther || loc == "" {
		c.w.t.Fatalf("%s: %d (Location %q), want a 303 redirect\n%s", r.req, r.status, loc, r.body)
	}
	return c.get(loc)
}

// session returns the session cookie's value, or "".
func (c *client) session() string {
	if k := c.cookies[sessionCookie]; k != nil {
		return k.Value
	}
	return ""
}

// want checks the status and that the body holds each fragment.
func (r *response) want(status int, fragments ...string) *response {
	r.t.Helper()
	if r.status != status {
		r.t.Fatalf("%s: status %d, want %d\n%s", r.req, r.status, status, r.body)
	}
	for _, f := range fragments {
		if !strings.Contains(r.body, f) {
			r.t.Errorf("%s: body lacks %q\n%s", r.req, f, r.body)
		}
	}
	return r
}

// lacks checks that the body holds none of the fragments.
func (r *response) lacks(fragments ...string) *response {
	r.t.Helper()
	for _, f := range fragments {
		if strings.Contains(r.body, f) {
			r.t.Errorf("%s: body holds %q", r.req, f)
		}
	}
	return r
}

// wantRedirect checks for a 303 to location.
func (r *response) wantRedirect(location string) *response {
	r.t.Helper()
	if r.status != http.StatusSeeOther || r.header.Get("Location") != location {
		r.t.Fatalf("%s: %d to %q, want 303 to %q\n%s", r.req, r.status, r.header.Get("Location"), location, r.body)
	}
	return r
}

// text returns the text of the element with id (no nested tags).
func (r *response) text(id string) string {
	r.t.Helper()
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(r.body)
	if m == nil {
		r.t.Fatalf("%s: no element id=%q\n%s", r.req, id, r.body)
	}
	return m[1]
}

// all returns the texts of the elements with class.
func (r *response) all(class string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`class="`+regexp.QuoteMeta(class)+`"[^>]*>([^<]*)<`).FindAllStringSubmatch(r.body, -1) {
		out = append(out, m[1])
	}
	return out
}

// enroll signs c in (already signed in is fine) and registers an
// authenticator, returning its secret and the one-time codes.
func (c *client) enroll() (secret []byte, codes []string) {
	c.w.t.Helper()
	c.get("/account").want(http.StatusOK) // the signed-in session's CSRF token
	page := c.follow(c.post("/2fa/start", nil).wantRedirect("/2fa/enroll")).want(http.StatusOK, `id="totp-key"`)
	secret, err := otp.ParseKey(page.text("totp-key"))
	if err != nil {
		c.w.t.Fatal(err)
	}
	page = c.follow(c.post("/2fa/enroll", form("code", otp.Code(secret, c.w.now()))).wantRedirect("/2fa/codes"))
	return secret, page.want(http.StatusOK).all("one-time-code")
}
