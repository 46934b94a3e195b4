package portal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/proxy"
)

// Log reasons of a failed sign-in, besides auth's and lockout's. Each is
// logged; the page always says the same (catalog key "signin.failed").
const (
	reasonInvalidUser     = "invalid user name"
	reasonEmptyPassword   = "empty password"
	reasonLongCode        = "code too long"
	reasonBackendRejected = "backend rejected the password"
	reasonNoTOTP          = "2FA account without an authenticator (passcodes managed by the admin); the portal needs one"
	reasonNoCode          = "2FA account without a code"
	reasonWrongCode       = "wrong, used or replayed code"
)

// maxCodeLen bounds the code field: a TOTP code or a one-time code, with
// the spaces and hyphens people type.
const maxCodeLen = 32

// handler is a page that needs the request's session.
type handler func(w http.ResponseWriter, r *http.Request, id string, sess session)

// post wraps a POST handler: the form must parse within the body limit,
// and carry the CSRF token of a live session (403 otherwise). With
// signedIn, a session that has not signed in is sent to the sign-in form.
func (s *Server) post(signedIn bool, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.message(w, r, http.StatusRequestEntityTooLarge, "badrequest.title", "badrequest.text")
				return
			}
			s.message(w, r, http.StatusBadRequest, "badrequest.title", "badrequest.text")
			return
		}
		id := sessionID(r)
		sess, ok := s.sessions.get(id)
		if !ok || !validCSRF(sess.csrf, r.PostForm.Get("csrf")) {
			client, _ := clientOf(r)
			s.log.Info("request refused: no live session or a wrong CSRF token", "client", client.Addr().String(),
				"path", r.URL.Path, "session", ok)
			s.message(w, r, http.StatusForbidden, "forbidden.title", "forbidden.text")
			return
		}
		if signedIn && sess.user == "" {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		h(w, r, id, sess)
	}
}

// signedIn wraps a GET handler for signed-in sessions; anyone else is
// sent to the sign-in form.
func (s *Server) signedIn(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := sessionID(r)
		sess, ok := s.sessions.get(id)
		if !ok || sess.user == "" {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		h(w, r, id, sess)
	}
}

// getSignIn shows the sign-in form, starting a session (not signed in) to
// hold its CSRF token.
func (s *Server) getSignIn(w http.ResponseWriter, r *http.Request) {
	id := sessionID(r)
	sess, ok := s.sessions.get(id)
	if ok && sess.user != "" {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	if !ok {
		var err error
		if id, sess, err = s.sessions.create(""); err != nil {
			s.log.Warn("no session for the sign-in form", "err", err)
			s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
			return
		}
		setSessionCookie(w, id)
	}
	s.render(w, r, http.StatusOK, "signin", "signin.title", view{CSRF: sess.csrf})
}

// signInResult is the outcome of one sign-in attempt.
type signInResult struct {
	ok, unavailable bool
	// user is the account as the session names it.
	user string
	// reason and info are for the log line of a failure.
	reason string
	info   *lockout.FailureInfo
	// kind is the second factor that was accepted, if any.
	kind auth.SecondFactor
}

// postSignIn checks the one sign-in form. Every failure gets the same
// page, after the tarpit; the log says why. A success replaces the
// session with a new one (a new id and CSRF token) and goes to the
// account page.
func (s *Server) postSignIn(w http.ResponseWriter, r *http.Request, id string, sess session) {
	start := time.Now()
	user := r.PostForm.Get("user")
	client, local := clientOf(r)
	res := s.checkSignIn(r.Context(), user, r.PostForm.Get("password"), r.PostForm.Get("code"),
		proxy.ClientInfo{Addr: client, Local: local, Session: requestID()})
	if res.unavailable {
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if !res.ok {
		attrs := []any{"client", client.Addr().String(), "user", user, "reason", res.reason}
		if res.info != nil {
			attrs = append(attrs, "lockout", *res.info)
		}
		s.log.Info("login failed", attrs...)
		wait(r.Context(), start, s.opts.Guard.Delay(s.tarpit.fail(client.Addr(), time.Now())))
		if !validUser(user) {
			user = ""
		}
		s.render(w, r, http.StatusOK, "signin", "signin.title", view{
			Path: "/signin", CSRF: sess.csrf, User: user, Error: msg(requestLang(r), "signin.failed"),
		})
		return
	}
	s.tarpit.reset(client.Addr())
	s.sessions.remove(id)
	newID, _, err := s.sessions.create(res.user)
	if err != nil {
		s.log.Warn("no session after a sign-in", "user", res.user, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	setSessionCookie(w, newID)
	s.log.Info("login", "client", client.Addr().String(), "user", res.user, "second_factor", res.kind.String())
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// validUser reports whether user may be shown back on the form.
func validUser(user string) bool { return auth.ValidateUser(user) == nil }

// checkSignIn decides one sign-in, in the order mail logins use:
//
//  1. the lockout check, before anything else (a lock, or this very
//     password and code already found wrong, fails here);
//  2. the policy: an account without 2FA from outside trusted_networks
//     under require_2fa_outside is refused without asking the backend;
//  3. the password, by an IMAP login at the backend with the user's own
//     credentials (never an app passcode: the backend knows none);
//  4. for a 2FA account: an authenticator must be registered, and code
//     must be a fresh TOTP code or an unused one-time code (consumed);
//  5. the lockout bookkeeping: definite failures count, a success clears.
func (s *Server) checkSignIn(ctx context.Context, user, password, code string, client proxy.ClientInfo) signInResult {
	fail := func(reason string) signInResult { return signInResult{user: user, reason: reason} }
	switch {
	case !validUser(user):
		return fail(reasonInvalidUser)
	case password == "":
		return fail(reasonEmptyPassword)
	case len(code) > maxCodeLen:
		return fail(reasonLongCode)
	}
	ip := client.Addr.Addr()
	secret := password + "\x00" + code
	guard := s.opts.Guard
	counted := func(reason string) signInResult {
		info := guard.Failure(user, ip, secret)
		return signInResult{user: user, reason: reason, info: &info}
	}
	switch v := guard.Check(user, ip, secret); v.Outcome {
	case lockout.Unavailable:
		s.log.Error("lockout state unavailable; refusing sign-ins until it recovers", "user", user, "err", v.Err)
		return signInResult{unavailable: true}
	case lockout.Locked, lockout.Stale:
		return fail(v.String())
	}
	rt := s.opts.Runtime()
	// The policy in force, not the accounts file: a sign-in attempt parses
	// nothing (the file may hold 50,000 accounts), and the portal reloads
	// after each of its own writes.
	name, twoFA, hasTOTP := rt.Policy.Account(user)
	if !twoFA && *rt.Config.Require2FAOutside && !rt.Policy.Trusted(ip) {
		return fail(auth.ReasonOutside)
	}
	if err := s.opts.CheckPassword(ctx, user, password, client); err != nil {
		if errors.Is(err, proxy.ErrPasswordRejected) {
			return counted(reasonBackendRejected)
		}
		s.log.Warn("backend unavailable", "user", user, "err", err)
		return signInResult{unavailable: true}
	}
	res := signInResult{ok: true, user: user}
	if twoFA {
		res.user = name
		switch {
		case !hasTOTP:
			return fail(reasonNoTOTP)
		case code == "":
			return counted(reasonNoCode)
		}
		kind, ok, err := auth.CheckSecondFactor(auth.OpenStore(rt.Config.Accounts), rt.Config.StateDir, name, code, s.now(), &s.replay)
		if err != nil {
			s.log.Error("checking a second factor", "user", name, "err", err)
			return signInResult{unavailable: true}
		}
		if !ok {
			return counted(reasonWrongCode)
		}
		res.kind = kind
	}
	guard.Success(user, ip)
	return res
}

// postSignOut ends the session.
func (s *Server) postSignOut(w http.ResponseWriter, r *http.Request, id string, sess session) {
	s.sessions.remove(id)
	clearSessionCookie(w)
	client, _ := clientOf(r)
	s.log.Info("signed out", "client", client.Addr().String(), "user", sess.user)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// requestID is a short random id that names one sign-in in the backend's
// log (forward_client_ip), unrelated to the session id.
func requestID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "portal-" + hex.EncodeToString(b[:])
}

// clientIP is the request's client address.
func clientIP(r *http.Request) netip.Addr {
	c, _ := clientOf(r)
	return c.Addr()
}
