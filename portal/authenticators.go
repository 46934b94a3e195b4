package portal

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/otp"
)

// confirmCode checks code, typed to confirm a change to the account's
// second factors: a 6-digit code from any authenticator but except (none
// when empty), or a one-time code, which it consumes. Wrong codes count
// in the lockout counters and wait out the tarpit, as on the sign-in
// form; a refusal is logged as refusal ("turning 2FA off refused"), and
// the user is sent back to the account page with the flash wrongKey.
// When ok is false, the reply has been written.
func (s *Server) confirmCode(w http.ResponseWriter, r *http.Request, id string, rt Generation, store *auth.Store, st auth.TwoFAStatus,
	code, except, refusal, wrongKey string) (auth.SecondFactorResult, bool) {
	start := time.Now()
	ip := clientIP(r)
	refuse := func(reason string, info *lockout.FailureInfo) {
		attrs := []any{"client", ip.String(), "user", st.User, "reason", reason}
		if info != nil {
			attrs = append(attrs, "lockout", *info)
		}
		s.log.Info(refusal, attrs...)
		wait(start, max(s.opts.Guard.Delay(s.tarpit.fail(ip, time.Now())), s.minFailure))
		s.setFlash(id, true, wrongKey, "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
	}
	if code == "" || len(code) > maxCodeLen {
		refuse(reasonNoCode, nil)
		return auth.SecondFactorResult{}, false
	}
	secret := "\x00" + code
	switch v := s.opts.Guard.Check(st.User, ip, secret); v.Outcome {
	case lockout.Unavailable:
		s.log.Error("lockout state unavailable", "user", st.User, "err", v.Err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return auth.SecondFactorResult{}, false
	case lockout.Locked, lockout.Stale:
		refuse(v.String(), nil)
		return auth.SecondFactorResult{}, false
	}
	res, ok, err := auth.CheckSecondFactorExcept(store, rt.Config.StateDir, st.User, code, s.now(), s.replay, except)
	if err != nil {
		s.log.Error("checking a second factor", "user", st.User, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return auth.SecondFactorResult{}, false
	}
	if !ok {
		info := s.opts.Guard.Failure(st.User, ip, secret)
		refuse(reasonWrongCode, &info)
		return auth.SecondFactorResult{}, false
	}
	s.tarpit.reset(ip)
	s.recordFactor(r, st.User, res)
	return res, true
}

// recordFactor notes the use of the authenticator whose code was taken,
// for the "last used" the account page shows.
func (s *Server) recordFactor(r *http.Request, user string, res auth.SecondFactorResult) {
	if s.opts.RecordUse == nil || res.AuthenticatorID == "" {
		return
	}
	s.opts.RecordUse(res.AuthenticatorID, auth.LastUse{
		User: user, App: res.Authenticator, Time: s.now().UTC(), ClientIP: clientIP(r).String(), Protocol: "portal",
	})
}

// postAddAuthenticator begins adding one more authenticator, named by
// the form, once the user typed a code from one they have (or a one-time
// code): a new secret is kept in this session until a code from it is
// typed on the enrollment page.
func (s *Server) postAddAuthenticator(w http.ResponseWriter, r *http.Request, id string, sess session) {
	name := strings.TrimSpace(r.PostForm.Get("name"))
	rt, store, st, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	switch {
	case !st.HasTOTP():
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	case auth.ValidateAuthenticatorName(name) != nil:
		s.setFlash(id, true, "authenticators.bad_name", "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	case len(st.Authenticators) >= auth.MaxAuthenticators:
		s.setFlash(id, true, "authenticators.too_many", "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	for _, au := range st.Authenticators {
		if strings.EqualFold(au.Name, name) {
			s.setFlash(id, true, "authenticators.exists", au.Name)
			http.Redirect(w, r, "/account", http.StatusSeeOther)
			return
		}
	}
	if _, ok := s.confirmCode(w, r, id, rt, store, st, r.PostForm.Get("code"), "", "adding an authenticator refused", "authenticators.wrong"); !ok {
		return
	}
	s.startPending(w, r, id, name, true)
}

// startPending makes a new TOTP secret, kept only in the session until
// the user types a code from it on the enrollment page, and sends the
// user there. add and name say it is one more authenticator, so named.
func (s *Server) startPending(w http.ResponseWriter, r *http.Request, id, name string, add bool) {
	secret, err := otp.NewSecret()
	if err != nil {
		s.log.Error("making a TOTP secret", "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if _, err := s.sessions.update(id, func(p *session) { p.pending, p.pendingName, p.pendingAdd = secret, name, add }); err != nil {
		s.sessionsUnavailable(w, r, err)
		return
	}
	http.Redirect(w, r, "/2fa/enroll", http.StatusSeeOther)
}

// addPendingAuthenticator registers the session's pending secret as one
// more authenticator (postEnroll, once its code was right).
func (s *Server) addPendingAuthenticator(w http.ResponseWriter, r *http.Request, id string, sess session) {
	rt, store, _, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	err := auth.AddAuthenticator(store, rt.Config.StateDir, sess.user, sess.pendingName, sess.pending)
	_, _ = s.sessions.update(id, func(p *session) { p.pending, p.pendingName, p.pendingAdd = nil, "", false })
	switch {
	case errors.Is(err, auth.ErrTooManyAuthenticators):
		s.setFlash(id, true, "authenticators.too_many", "")
	case errors.Is(err, auth.ErrAuthenticatorName):
		s.setFlash(id, true, "authenticators.exists", sess.pendingName)
	case errors.Is(err, auth.ErrNoAuthenticator):
		// 2FA was turned off meanwhile (another session, the admin):
		// the account page shows how things stand.
	case errors.Is(err, auth.ErrUnavailable):
		s.log.Error("adding an authenticator: the accounts database does not answer", "user", sess.user, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	case err != nil:
		s.log.Error("adding an authenticator", "user", sess.user, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	default:
		s.log.Info("authenticator added", "client", clientIP(r).String(), "user", sess.user, "authenticator", sess.pendingName)
		s.setFlash(id, false, "authenticators.added", sess.pendingName)
		s.reload(id, sess.user, "authenticator added")
	}
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// postRemoveAuthenticator removes the authenticator named by the form,
// given a code from another one or a one-time code. Removing the only
// one is turning 2FA off, and goes as postDisable does (a code from it
// is taken then).
func (s *Server) postRemoveAuthenticator(w http.ResponseWriter, r *http.Request, id string, sess session) {
	name := r.PostForm.Get("name")
	rt, store, st, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	var found string
	for _, au := range st.Authenticators {
		if strings.EqualFold(au.Name, name) {
			found = au.Name
		}
	}
	if found == "" {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	if len(st.Authenticators) == 1 {
		s.disable(w, r, id, rt, store, st)
		return
	}
	if _, ok := s.confirmCode(w, r, id, rt, store, st, r.PostForm.Get("code"), found, "removing an authenticator refused", "authenticators.wrong_other"); !ok {
		return
	}
	removed, err := auth.RemoveAuthenticator(store, st.User, found)
	switch {
	case errors.Is(err, auth.ErrLastAuthenticator), errors.Is(err, auth.ErrNoAuthenticator):
		// Another session changed them meanwhile; the page shows how.
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	case err != nil:
		s.log.Error("removing an authenticator", "user", st.User, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	s.log.Info("authenticator removed", "client", clientIP(r).String(), "user", st.User, "authenticator", removed)
	s.setFlash(id, false, "authenticators.removed", removed)
	s.reload(id, st.User, "authenticator removed")
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}
