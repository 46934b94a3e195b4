package portal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The sign-in form's CSRF protection is stateless, so that no one can
// fill the server's memory (or push out a real user's form) by asking for
// the form: a double-submit token bound to a server secret. GET /signin
// gives the browser a random token, with the time it was issued, in a
// short-lived cookie (HttpOnly, Secure, SameSite=Strict, __Host-), and
// puts the HMAC of that cookie under a per-process key in the form. The
// POST must carry both, and they must match (compared in constant time).
// Another site can neither read nor set the cookie, nor compute the HMAC
// without the key.
const (
	// signinCookie holds the sign-in form's token.
	signinCookie = "__Host-kanmon_signin"
	// signinFormLifetime is how long a sign-in form can be sent; the
	// cookie expires then too.
	signinFormLifetime = time.Hour
	// signinFormSkew is how far in the future an issue time may lie
	// (the clock stepped back).
	signinFormSkew = time.Minute
	// signinMACContext separates this HMAC from any other use of the key.
	signinMACContext = "kanmon portal sign-in form\x00"
)

// newSigninToken returns a new cookie value: a random token and its issue
// time, "TOKEN.UNIXSECONDS".
func (s *Server) newSigninToken() (string, error) {
	tok, err := randomToken()
	if err != nil {
		return "", err
	}
	return tok + "." + strconv.FormatInt(s.now().Unix(), 10), nil
}

// signinAge returns how old the cookie value v is; ok is false when it
// is malformed, too old or from the future.
func (s *Server) signinAge(v string) (age time.Duration, ok bool) {
	tok, ts, found := strings.Cut(v, ".")
	if !found || len(tok) != tokenLen || len(ts) > 20 {
		return 0, false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, false
	}
	age = s.now().Sub(time.Unix(sec, 0))
	if age < -signinFormSkew || age >= signinFormLifetime {
		return 0, false
	}
	return age, true
}

// signinCSRF is the form token for the cookie value v.
func (s *Server) signinCSRF(v string) string {
	mac := hmac.New(sha256.New, s.formKey[:])
	mac.Write([]byte(signinMACContext))
	mac.Write([]byte(v))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// signinToken returns the request's sign-in cookie when it is
// well-formed and current.
func (s *Server) signinToken(r *http.Request) (v string, age time.Duration, ok bool) {
	c, err := r.Cookie(signinCookie)
	if err != nil {
		return "", 0, false
	}
	if age, ok = s.signinAge(c.Value); !ok {
		return "", 0, false
	}
	return c.Value, age, true
}

// signinFormToken returns the CSRF token for the sign-in form this
// request is shown: the one of the browser's current cookie, or of a new
// cookie, which it sets, when there is none or it is past half its
// lifetime (so that an open form does not expire soon).
func (s *Server) signinFormToken(w http.ResponseWriter, r *http.Request) (string, error) {
	if v, age, ok := s.signinToken(r); ok && age < signinFormLifetime/2 {
		return s.signinCSRF(v), nil
	}
	v, err := s.newSigninToken()
	if err != nil {
		return "", err
	}
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: v, Path: "/", MaxAge: int(signinFormLifetime / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	return s.signinCSRF(v), nil
}

// validSigninPost reports whether the sign-in POST carries a current
// sign-in cookie and the form token bound to it.
func (s *Server) validSigninPost(r *http.Request) bool {
	v, _, ok := s.signinToken(r)
	return ok && validCSRF(s.signinCSRF(v), r.PostForm.Get("csrf"))
}

// clearSigninCookie removes the sign-in cookie after a sign-in.
func clearSigninCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}
