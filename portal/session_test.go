package portal_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// wantSessionCookie checks the session cookie a response sets: named
// with the __Host- prefix, 256 random bits, HttpOnly, Secure,
// SameSite=Strict, for the whole site (Path=/, no Domain), and no expiry
// of its own.
func wantSessionCookie(t *testing.T, r *response) {
	t.Helper()
	for _, k := range r.set {
		if k.Name != sessionCookie {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(k.Value)
		switch {
		case err != nil || len(raw) != 32:
			t.Errorf("session id %q: want 32 bytes of base64url", k.Value)
		case !k.HttpOnly || !k.Secure || k.SameSite != http.SameSiteStrictMode:
			t.Errorf("session cookie: HttpOnly=%v Secure=%v SameSite=%v, want HttpOnly, Secure, Strict", k.HttpOnly, k.Secure, k.SameSite)
		case k.Path != "/" || k.Domain != "" || k.MaxAge != 0 || !k.Expires.IsZero():
			t.Errorf("session cookie: Path=%q Domain=%q MaxAge=%d Expires=%v", k.Path, k.Domain, k.MaxAge, k.Expires)
		}
		return
	}
	t.Errorf("%s set no session cookie", r.req)
}

// Every answer carries the security headers, and none may be cached.
func TestSecurityHeaders(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	pages := []*response{c.get("/signin"), c.get("/static/portal.css"), c.get("/nowhere"), c.post("/signin", form("csrf", "forged"))}
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	pages = append(pages, c.get("/account"), c.post("/2fa/start", nil))
	pages = append(pages, c.get("/2fa/enroll"), c.get("/2fa/qr.png"))
	want := map[string]string{
		"Content-Security-Policy":   "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Frame-Options":           "DENY",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "no-referrer",
		"Cache-Control":             "no-store",
		"Strict-Transport-Security": "max-age=31536000",
	}
	for _, r := range pages {
		for k, v := range want {
			if got := r.header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", r.req, k, got, v)
			}
		}
		if strings.Contains(r.body, "<script") || strings.Contains(r.body, " style=") || strings.Contains(r.body, " onclick=") {
			t.Errorf("%s: a script or inline style", r.req)
		}
	}
	if ct := pages[1].header.Get("Content-Type"); ct != "text/css; charset=utf-8" {
		t.Errorf("portal.css: Content-Type %q", ct)
	}
	if pages[2].status != http.StatusNotFound {
		t.Errorf("GET /nowhere: %d", pages[2].status)
	}
	if qr := pages[len(pages)-1]; qr.header.Get("Content-Type") != "image/png" || !strings.HasPrefix(qr.body, "\x89PNG") {
		t.Errorf("GET /2fa/qr.png: %d %q", qr.status, qr.header.Get("Content-Type"))
	}
}

// A POST without the session's CSRF token is refused with 403, whatever
// else it carries; so is one without a session.
func TestCSRF(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.get("/signin").want(http.StatusOK)
	c.post("/signin", form("user", "carol", "password", carolPW, "csrf", "")).want(http.StatusForbidden, "The form has expired")
	c.post("/signin", form("user", "carol", "password", carolPW, "csrf", strings.Repeat("A", 43))).want(http.StatusForbidden)
	if w.checks.Load() != 0 {
		t.Error("a refused POST reached the backend")
	}
	stranger := w.client(inside) // no cookie at all
	stranger.post("/signin", form("user", "carol", "password", carolPW)).want(http.StatusForbidden)

	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.get("/account")
	good := c.csrf
	for _, path := range []string{"/2fa/start", "/2fa/enroll", "/2fa/disable", "/passcodes/add", "/passcodes/delete", "/signout"} {
		c.post(path, form("csrf", "")).want(http.StatusForbidden)
		c.post(path, url.Values{"csrf": {good[:len(good)-1] + "x"}}).want(http.StatusForbidden)
	}
	// The session survived all that, and its real token works.
	c.csrf = good
	c.post("/signout", nil).wantRedirect("/signin")
	c.get("/account").wantRedirect("/signin")
	w.wantLog("request refused: no live session or a wrong CSRF token")
}

// A session ends after session_idle without a request, and after
// session_max however busy.
func TestSessionExpiry(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	w.advance(14 * time.Minute)
	c.get("/account").want(http.StatusOK)
	w.advance(15 * time.Minute)
	c.get("/account").wantRedirect("/signin")

	c.signIn("carol", carolPW, "").wantRedirect("/account")
	for range 34 { // a request every 14 minutes for 7h56m
		w.advance(14 * time.Minute)
		if r := c.get("/account"); r.status != http.StatusOK {
			t.Fatalf("busy session ended early: %d", r.status)
		}
	}
	w.advance(10 * time.Minute) // 8h6m since sign-in
	c.get("/account").wantRedirect("/signin")
	// A stale page's form is refused.
	c.post("/signout", nil).want(http.StatusForbidden)
}

// The pages are in Japanese for a browser that asks for it, and ?lang=
// switches and remembers the language.
func TestLanguage(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.lang = "ja,en-US;q=0.8"
	c.get("/signin").want(http.StatusOK, `<html lang="ja">`, "サインイン", "ユーザー名", "パスワード", `href="/signin?lang=en"`)
	r := c.post("/signin", form("user", "carol", "password", "wrong"))
	if got := r.text("error"); !strings.Contains(got, "サインインできませんでした") {
		t.Errorf("Japanese failure message: %q", got)
	}
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.get("/account").want(http.StatusOK, `<html lang="ja">`, "2段階認証", "メールアプリの設定", "接続の保護")

	c.get("/account?lang=en").want(http.StatusOK, `<html lang="en">`, "Two-factor authentication")
	c.get("/account").want(http.StatusOK, `<html lang="en">`) // the cookie remembers
	c.get("/account?lang=xx").want(http.StatusOK, `<html lang="en">`)

	e := w.client(inside)
	e.lang = "de-DE, en;q=0.5, ja;q=0.4"
	e.get("/signin").want(http.StatusOK, `<html lang="en">`)
	j := w.client(inside)
	j.lang = "ja-JP"
	j.get("/signin?lang=en").want(http.StatusOK, `<html lang="en">`)
}

// A request body over the limit is refused before any work.
func TestBodyLimit(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.get("/signin")
	c.post("/signin", form("user", "carol", "password", strings.Repeat("x", 20<<10))).want(http.StatusRequestEntityTooLarge)
	if w.checks.Load() != 0 {
		t.Error("an oversized request reached the backend")
	}
}
