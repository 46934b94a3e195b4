package portal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/proxy/backend"
	"github.com/kanmon-mail/kanmon/username"
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

// invalidUserLog stands in the log for a user field that is no valid user
// name: it may be anything, a password typed into the wrong field too.
const invalidUserLog = "(invalid)"

// maxCodeLen bounds the code field: a TOTP code or a one-time code, with
// the spaces and hyphens people type.
const maxCodeLen = 32

// handler is a page that needs the request's signed-in session.
type handler func(w http.ResponseWriter, r *http.Request, id string, sess session)

// parseForm parses a POST's form within the body limit; false (and an
// error page sent) when it does not parse.
func (s *Server) parseForm(w http.ResponseWriter, r *http.Request) bool {
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.message(w, r, http.StatusRequestEntityTooLarge, "badrequest.title", "badrequest.text")
			return false
		}
		s.message(w, r, http.StatusBadRequest, "badrequest.title", "badrequest.text")
		return false
	}
	return true
}

// refuseForm answers a POST without a live session or with a wrong CSRF
// token: 403.
func (s *Server) refuseForm(w http.ResponseWriter, r *http.Request, live bool) {
	s.log.Info("request refused: no live session or a wrong CSRF token", "client", clientIP(r).String(),
		"path", r.URL.Path, "session", live)
	s.message(w, r, http.StatusForbidden, "forbidden.title", "forbidden.text")
}

// post wraps a POST handler of a signed-in session: the form must parse
// within the body limit, and carry the CSRF token of a live session (403
// otherwise).
func (s *Server) post(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.parseForm(w, r) {
			return
		}
		id := sessionID(r)
		sess, ok, err := s.sessions.get(id)
		if err != nil {
			s.sessionsUnavailable(w, r, err)
			return
		}
		if !ok || !validCSRF(sess.csrf, r.PostForm.Get("csrf")) {
			s.refuseForm(w, r, ok)
			return
		}
		h(w, r, id, sess)
	}
}

// signinPost wraps the sign-in POST: the form must parse, and carry the
// token bound to the browser's sign-in cookie (403 otherwise).
func (s *Server) signinPost(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.parseForm(w, r) {
			return
		}
		if !s.validSigninPost(r) {
			s.refuseForm(w, r, false)
			return
		}
		h(w, r)
	}
}

// signedIn wraps a GET handler for signed-in sessions; anyone else is
// sent to the sign-in form.
func (s *Server) signedIn(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := sessionID(r)
		sess, ok, err := s.sessions.get(id)
		if err != nil {
			s.sessionsUnavailable(w, r, err)
			return
		}
		if !ok {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		h(w, r, id, sess)
	}
}

// getSignIn shows the sign-in form. It keeps nothing on the server: the
// form's CSRF token is bound to a cookie (signinform.go).
func (s *Server) getSignIn(w http.ResponseWriter, r *http.Request) {
	_, ok, err := s.sessions.get(sessionID(r))
	if err != nil {
		s.sessionsUnavailable(w, r, err)
		return
	}
	if ok {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	csrf, err := s.signinFormToken(w, r)
	if err != nil {
		s.log.Error("no token for the sign-in form", "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	s.render(w, r, http.StatusOK, "signin", "signin.title", view{CSRF: csrf})
}

// signInResult is the outcome of one sign-in attempt.
type signInResult struct {
	// ok: signed in. unavailable: refused before any password check,
	// for a fault of the server's (a 503, never counted). Neither: a
	// failure, the same page for every reason.
	ok, unavailable bool
	// user is the account as the session names it.
	user string
	// reason and info are for the log line of a failure.
	reason string
	info   *lockout.FailureInfo
	// factor is the second factor that was accepted, if any, and the
	// authenticator whose code it was.
	factor auth.SecondFactorResult
	// secondFactor is whether the account has 2FA on, so that kind was
	// required.
	secondFactor bool
}

// postSignIn checks the one sign-in form. Every failure gets the same
// page, never sooner than the tarpit delay and minFailureDelay after the
// start of the attempt; the log says why. A success starts a new session
// and goes to the account page.
//
// The check runs to its end whatever the client does: a client that
// closes its side of the connection cancels r.Context(), and a check cut
// short by that would be neither counted nor tarpitted, and would answer
// sooner for a right password than for a wrong one. The backend's own
// timeouts bound it instead.
func (s *Server) postSignIn(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := context.WithoutCancel(r.Context())
	user := r.PostForm.Get("user")
	client, local := clientOf(r)
	ip := client.Addr()
	res := s.checkSignIn(ctx, r.Context().Done(), user, r.PostForm.Get("password"), r.PostForm.Get("code"),
		backend.ClientInfo{Addr: client, Local: local, Session: requestID()})
	var id string
	if res.ok {
		var err error
		if id, _, err = s.sessions.create(res.user, res.secondFactor); err != nil {
			s.log.Error("sign-in failed: no session after a right password", "client", ip.String(), "user", res.user, "err", err)
			res = signInResult{user: res.user}
		}
	}
	if !res.ok {
		n := 0
		if res.unavailable {
			n = s.tarpit.next(ip, time.Now())
		} else {
			if res.reason != "" {
				attrs := []any{"client", ip.String(), "user", logUser(res.user), "reason", res.reason} // canonical once known
				if res.info != nil {
					attrs = append(attrs, "lockout", *res.info)
				}
				s.log.Info("login failed", attrs...)
			}
			n = s.tarpit.fail(ip, time.Now())
		}
		wait(start, max(s.opts.Guard.Delay(n), s.minFailure))
		if res.unavailable {
			s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
			return
		}
		if !validUser(user) {
			user = ""
		}
		csrf, _, _ := s.signinToken(r)
		s.render(w, r, http.StatusOK, "signin", "signin.title", view{
			Path: "/signin", CSRF: s.signinCSRF(csrf), User: user, Error: msg(requestLang(r), "signin.failed"),
		})
		return
	}
	s.tarpit.reset(ip)
	if old := sessionID(r); old != "" {
		if err := s.sessions.remove(old); err != nil {
			// The browser gets the new session's cookie in place of the
			// old one, and the old one's record expires in its time.
			s.log.Warn("the session replaced by a sign-in could not be ended", "client", ip.String(), "user", res.user, "err", err)
		}
	}
	clearSigninCookie(w)
	setSessionCookie(w, id)
	attrs := []any{"client", ip.String(), "user", res.user, "second_factor", res.factor.Kind.String()}
	if res.factor.Authenticator != "" {
		attrs = append(attrs, "authenticator", res.factor.Authenticator)
	}
	s.log.Info("login", attrs...)
	s.recordFactor(r, res.user, res.factor)
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// validUser reports whether user may be shown back on the form or logged.
func validUser(user string) bool { return auth.ValidateUser(user) == nil }

// logUser is user as a log line may show it: itself when it is a valid
// user name, else invalidUserLog.
func logUser(user string) string {
	if validUser(user) {
		return user
	}
	return invalidUserLog
}

// checkSignIn decides one sign-in, in the order mail logins use:
//
//  1. the lockout check, before anything else (a lock, or this very
//     password and code already found wrong, fails here);
//  2. the sessions: while they cannot be kept (a shared store that does
//     not answer), the sign-in is refused as unavailable, before the
//     password is checked;
//  3. the policy: an account without 2FA from outside trusted_networks
//     under require_2fa_outside is refused without asking the backend.
//     Whether the account has 2FA comes from the accounts file (its
//     cached parse), not the policy in force, which a failed reload may
//     leave stale;
//  4. the password, by an IMAP login at the backend with the user's own
//     credentials (never an app passcode: the backend knows none), at
//     most maxConcurrentChecks at once: over the cap it waits for a
//     place until queue closes (the client went away) or maxCheckWait;
//  5. for a 2FA account: an authenticator must be registered, and code
//     must be a fresh TOTP code or an unused one-time code (consumed);
//  6. the lockout bookkeeping: definite failures count, a success clears.
//
// ctx must not end with the client (see postSignIn). A fault after the
// password was accepted (the TOTP key unreadable, the accounts file
// unwritable, a shared replay guard or session store gone down since
// step 2) is logged at ERROR and is an ordinary, uncounted failure:
// a 503 there would tell that the password was right.
func (s *Server) checkSignIn(ctx context.Context, queue <-chan struct{}, user, password, code string, client backend.ClientInfo) signInResult {
	fail := func(reason string) signInResult { return signInResult{user: user, reason: reason} }
	switch {
	case !validUser(user):
		return fail(reasonInvalidUser)
	case password == "":
		return fail(reasonEmptyPassword)
	case len(code) > maxCodeLen:
		return fail(reasonLongCode)
	}
	rt := s.opts.Generation()
	name, ok := s.accountName(rt, user)
	if !ok {
		return fail(auth.ReasonUserName.String())
	}
	user = name
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
	if err := s.sessions.ready(); err != nil {
		s.log.Error("portal sessions unavailable; refusing sign-ins until they recover", "user", user, "err", err)
		return signInResult{unavailable: true}
	}
	store := s.accounts(rt)
	st, err := auth.Status(store, user)
	if err != nil {
		s.log.Error("reading the accounts", "accounts", store.Path(), "user", user, "err", err)
		return signInResult{unavailable: true}
	}
	if !st.On && *rt.Config.Require2FAOutside && !rt.Policy.Trusted(ip) {
		return fail(auth.ReasonOutside.String())
	}
	release, ok := s.acquireCheck(queue)
	if !ok {
		s.log.Warn("too many sign-ins at the backend at once; this one gave up waiting", "user", user,
			"client", ip.String(), "limit", maxConcurrentChecks)
		return signInResult{unavailable: true}
	}
	err = s.opts.CheckPassword(ctx, user, password, client)
	release()
	if err != nil {
		if errors.Is(err, backend.ErrPasswordRejected) {
			return counted(reasonBackendRejected)
		}
		s.log.Warn("backend unavailable", "user", user, "err", err)
		return signInResult{unavailable: true}
	}
	res := signInResult{ok: true, user: user}
	if st.On {
		res.user, res.secondFactor = st.User, true
		switch {
		case !st.HasTOTP():
			return fail(reasonNoTOTP)
		case code == "":
			return counted(reasonNoCode)
		}
		factor, ok, err := auth.CheckSecondFactorExcept(store, rt.Config.StateDir, st.User, code, s.now(), s.replay, "")
		if err != nil {
			s.log.Error("sign-in failed: the second factor could not be checked", "client", ip.String(), "user", st.User, "err", err)
			return signInResult{user: user}
		}
		if !ok {
			return counted(reasonWrongCode)
		}
		res.factor = factor
	}
	guard.Success(user, ip)
	return res
}

// accountName is the canonical account name for user as typed ([users]),
// as the mail proxy finds it; ok is false for a name it refuses, or for
// one that keeps a domain while the name before the "@" has 2FA.
func (s *Server) accountName(rt Generation, user string) (string, bool) {
	names := rt.Config.Users.Names
	name, err := names.Canonical(user)
	if err != nil {
		return "", false
	}
	if local, hasDomain := username.Local(name); hasDomain && rt.Policy.TwoFA(local) {
		return "", false
	}
	return name, true
}

// acquireCheck takes a place for a password check, waiting while all
// maxConcurrentChecks are taken, until queue closes or maxCheckWait; ok
// is false when it got none. release gives the place back.
func (s *Server) acquireCheck(queue <-chan struct{}) (release func(), ok bool) {
	release = func() { <-s.checks }
	select {
	case s.checks <- struct{}{}:
		return release, true
	default:
	}
	t := time.NewTimer(maxCheckWait)
	defer t.Stop()
	select {
	case s.checks <- struct{}{}:
		return release, true
	case <-queue:
	case <-t.C:
	}
	return nil, false
}

// postSignOut ends the session.
//
// When the session cannot be ended (a shared store that does not answer),
// the browser keeps its cookie and gets the "unavailable" page, so that
// the user knows to sign out again, rather than believe a session ended
// that still lives.
func (s *Server) postSignOut(w http.ResponseWriter, r *http.Request, id string, sess session) {
	if err := s.sessions.remove(id); err != nil {
		s.sessionsUnavailable(w, r, err)
		return
	}
	clearSessionCookie(w)
	s.log.Info("signed out", "client", clientIP(r).String(), "user", sess.user)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// accountForChange reads the signed-in user's account before a change to
// its 2FA or passcodes, from the accounts file under the runtime in
// force, and lets the change go ahead only as requireSecondFactor says.
// When ok is false the reply has been written.
func (s *Server) accountForChange(w http.ResponseWriter, r *http.Request, id string, sess session) (rt Generation, store *auth.Store, st auth.TwoFAStatus, ok bool) {
	rt, store, st, ok = s.readAccount(w, r, sess)
	if !ok || !s.requireSecondFactor(w, r, id, sess, st) {
		return Generation{}, nil, st, false
	}
	return rt, store, st, true
}

// readAccount reads the signed-in user's 2FA status from the accounts
// file under the runtime in force. When ok is false the reply (503) has
// been written.
func (s *Server) readAccount(w http.ResponseWriter, r *http.Request, sess session) (rt Generation, store *auth.Store, st auth.TwoFAStatus, ok bool) {
	rt = s.opts.Generation()
	store = s.accounts(rt)
	st, err := auth.Status(store, sess.user)
	if err != nil {
		s.log.Error("reading the accounts", "accounts", store.Path(), "user", sess.user, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return Generation{}, nil, st, false
	}
	return rt, store, st, true
}

// requireSecondFactor lets a change to the account's 2FA or passcodes go
// ahead only from a session that proved a second factor when the account
// has 2FA on (st): a session that signed in with the password alone, when
// 2FA was still off, is ended and sent to sign in again. False when it
// was.
func (s *Server) requireSecondFactor(w http.ResponseWriter, r *http.Request, id string, sess session, st auth.TwoFAStatus) bool {
	if !st.On || sess.secondFactor {
		return true
	}
	if err := s.sessions.remove(id); err != nil {
		// It can change nothing still: every change checks this again.
		s.log.Warn("a session without a second factor could not be ended", "user", st.User, "err", err)
	}
	clearSessionCookie(w)
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "session ended: signed in without a second factor, and the account has 2FA on now",
		slog.String("client", clientIP(r).String()), slog.String("user", st.User), slog.String("path", r.URL.Path))
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
	return false
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
