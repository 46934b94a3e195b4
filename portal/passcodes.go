package portal

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/kanmon-mail/kanmon/auth"
)

// postAddPasscode makes an app passcode named by the form, limited to the
// protocols ticked (none or all ticked: every protocol). The reload puts
// it in force at once; the passcode is shown until the user presses Done.
func (s *Server) postAddPasscode(w http.ResponseWriter, r *http.Request, id string, sess session) {
	app := strings.TrimSpace(r.PostForm.Get("app"))
	var protocols []string
	for _, p := range r.PostForm["protocols"] {
		if !slices.Contains(protocols, p) {
			protocols = append(protocols, p)
		}
	}
	refuse := func(key, arg string) {
		s.setFlash(id, true, key, arg)
		http.Redirect(w, r, "/account", http.StatusSeeOther)
	}
	if auth.ValidateProtocols(protocols) != nil {
		refuse("passcodes.bad_scope", "")
		return
	}
	if len(protocols) == len(auth.ScopeProtocols) {
		protocols = nil
	}
	rt, store, st, ok := s.newPasscodeAllowed(w, r, id, sess, app)
	if !ok {
		return
	}
	code, err := auth.AddScopedPasscode(store, rt.Config.StateDir, st.User, app, protocols)
	if errors.Is(err, auth.ErrUnavailable) {
		s.log.Error("adding a passcode: the accounts database does not answer", "user", st.User, "app", app, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if err != nil {
		s.log.Warn("adding a passcode failed", "user", st.User, "app", app, "err", err)
		refuse("passcodes.add_failed", "")
		return
	}
	s.log.Info("passcode added", "client", clientIP(r).String(), "user", st.User, "app", app, "protocols", auth.FormatProtocols(protocols))
	_, uerr := s.sessions.update(id, func(p *session) { p.shown = &shownPasscode{app: app, code: code} })
	s.reload(id, st.User, "passcode added")
	if uerr != nil {
		// The passcode exists only here now: show it on this answer
		// rather than lose it with the session's change.
		s.log.Error("portal session not updated after a passcode was added; it is shown at once", "user", st.User, "app", app, "err", uerr)
		s.render(w, r, http.StatusOK, "passcode", "passcode.title", view{
			Path: "/passcodes/new", CSRF: sess.csrf, SignedIn: true, User: sess.user, App: app, Passcode: auth.FormatPasscode(code),
		})
		return
	}
	http.Redirect(w, r, "/passcodes/new", http.StatusSeeOther)
}

// getNewPasscode shows a new passcode, with the rule to try it before
// pressing Done.
func (s *Server) getNewPasscode(w http.ResponseWriter, r *http.Request, _ string, sess session) {
	if sess.shown == nil {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "passcode", "passcode.title", view{
		CSRF: sess.csrf, SignedIn: true, User: sess.user,
		App: sess.shown.app, Passcode: auth.FormatPasscode(sess.shown.code),
	})
}

// postDeletePasscode revokes a passcode; the reload ends the sessions
// that logged in with it.
func (s *Server) postDeletePasscode(w http.ResponseWriter, r *http.Request, id string, sess session) {
	app := r.PostForm.Get("app")
	_, store, _, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	owner, revoked, err := auth.RevokePasscode(store, sess.user, app)
	if errors.Is(err, auth.ErrUnavailable) {
		s.log.Error("deleting a passcode: the accounts database does not answer", "user", sess.user, "app", app, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if err != nil {
		s.log.Info("deleting a passcode failed", "user", sess.user, "app", app, "err", err)
		s.setFlash(id, true, "passcodes.not_found", "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	s.log.Info("passcode deleted", "client", clientIP(r).String(), "user", owner, "app", revoked)
	s.setFlash(id, false, "passcodes.deleted", revoked)
	s.reload(id, owner, "passcode deleted")
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// newPasscodeAllowed checks that the signed-in user may make a passcode
// named app: a valid name, 2FA on, room for one more, and no passcode of
// that name yet. When ok is false the user has been sent back to the
// account page with the reason (or the reply written).
func (s *Server) newPasscodeAllowed(w http.ResponseWriter, r *http.Request, id string, sess session, app string) (rt Generation, store *auth.Store, st auth.TwoFAStatus, ok bool) {
	refuse := func(key, arg string) {
		s.setFlash(id, true, key, arg)
		http.Redirect(w, r, "/account", http.StatusSeeOther)
	}
	if auth.ValidateApp(app) != nil {
		refuse("passcodes.bad_name", "")
		return rt, nil, st, false
	}
	if rt, store, st, ok = s.accountForChange(w, r, id, sess); !ok {
		return rt, nil, st, false
	}
	switch {
	case !st.On:
		refuse("passcodes.need_2fa", "")
		return rt, nil, st, false
	case len(st.Passcodes) >= maxPasscodesPerAccount:
		refuse("passcodes.too_many", "")
		return rt, nil, st, false
	}
	for _, pc := range st.Passcodes {
		if strings.EqualFold(pc.App, app) {
			refuse("passcodes.exists", pc.App)
			return rt, nil, st, false
		}
	}
	return rt, store, st, true
}
