package portal

import (
	"errors"
	"net/http"
	"strings"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/otp"
)

// postStart begins an enrollment: a new secret, kept only in this
// session until the user types a correct code from it.
func (s *Server) postStart(w http.ResponseWriter, r *http.Request, id string, sess session) {
	_, _, st, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	if !st.TOTPEnrolled.IsZero() {
		s.setFlash(id, true, "enroll.already", "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	s.startPending(w, r, id, "", false)
}

// getEnroll shows the pending key, its QR code and the code form.
func (s *Server) getEnroll(w http.ResponseWriter, r *http.Request, _ string, sess session) {
	if sess.pending == nil {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	s.renderEnroll(w, r, sess, "")
}

// renderEnroll shows the enrollment page for the session's pending
// secret, with errText at the top when set. A first enrollment lists the
// apps that signed in with the account password lately: each will need
// an app passcode once 2FA is on.
func (s *Server) renderEnroll(w http.ResponseWriter, r *http.Request, sess session, errText string) {
	v := view{
		Path: "/2fa/enroll", CSRF: sess.csrf, SignedIn: true, User: sess.user, Key: otp.FormatKey(sess.pending), Error: errText,
		Enroll: enrollView{Adding: sess.pendingAdd, Name: sess.pendingName},
	}
	if !sess.pendingAdd {
		v.Enroll.Clients, v.Enroll.ClientsUnavailable = s.passwordClients(requestLang(r), auth.ClientPassword, sess.user)
	}
	s.render(w, r, http.StatusOK, "enroll", "enroll.title", v)
}

// getQR serves the pending secret's otpauth URI as a QR code.
func (s *Server) getQR(w http.ResponseWriter, r *http.Request, _ string, sess session) {
	if sess.pending == nil {
		s.notFound(w, r)
		return
	}
	png, err := otp.QRPNG(otp.URI(s.opts.Issuer, sess.user, sess.pending), qrSize)
	if err != nil {
		s.log.Error("drawing the QR code", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	_, _ = w.Write(png)
}

// postEnroll checks the code typed from the pending secret. A right one
// registers the authenticator, named by the form: 2FA turns on, and the
// new one-time codes are shown; the code is spent, so it cannot sign in
// afterwards. The account's other portal sessions end. For one more
// authenticator (postAddAuthenticator), it is added under the name given
// there, and no new codes come.
func (s *Server) postEnroll(w http.ResponseWriter, r *http.Request, id string, sess session) {
	if sess.pending == nil {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	lang := requestLang(r)
	name := sess.pendingName
	if !sess.pendingAdd {
		if name = strings.TrimSpace(r.PostForm.Get("name")); name == "" {
			name = msg(lang, "enroll.default_name")
		}
		if auth.ValidateAuthenticatorName(name) != nil {
			s.renderEnroll(w, r, sess, msg(lang, "authenticators.bad_name"))
			return
		}
	}
	step, ok := otp.Verify(sess.pending, r.PostForm.Get("code"), s.now())
	if !ok {
		s.log.Info("enrollment code wrong", "client", clientIP(r).String(), "user", sess.user)
		s.renderEnroll(w, r, sess, msg(lang, "enroll.wrong"))
		return
	}
	// The code is spent: it cannot sign in afterwards. It may be spent
	// already (one more authenticator, whose code comes in the same time
	// step as the code from another that allowed adding it): it proved
	// the new secret all the same.
	if _, err := s.replay.Claim(sess.user, step); err != nil {
		s.log.Error("TOTP replay guard unavailable; enrollment refused", "client", clientIP(r).String(), "user", sess.user, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if sess.pendingAdd {
		s.addPendingAuthenticator(w, r, id, sess)
		return
	}
	rt, store, _, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	codes, err := auth.EnrollAuthenticator(store, rt.Config.StateDir, sess.user, name, sess.pending)
	if errors.Is(err, auth.ErrTOTPEnrolled) {
		s.setFlash(id, true, "enroll.already", "") // and getAccount forgets the pending secret
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	if err != nil {
		s.log.Error("registering an authenticator", "user", sess.user, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	// This session proved the new authenticator: it counts as signed in
	// with a second factor. Every other session of the account signed in
	// without one, so they end.
	_, uerr := s.sessions.update(id, func(p *session) { p.pending, p.codes, p.secondFactor = nil, codes, true })
	ended, err := s.sessions.removeOthers(sess.user, id)
	if err != nil {
		// They signed in without a second factor, so they can change
		// nothing now that 2FA is on (requireSecondFactor); they end
		// at their next change or expiry.
		s.log.Error("2FA turned on, but the account's other portal sessions could not be ended", "user", sess.user, "err", err)
	}
	s.log.Info("2FA turned on: authenticator registered", "client", clientIP(r).String(), "user", sess.user, "one_time_codes", len(codes),
		"other_sessions_ended", ended)
	s.reload(id, sess.user, "2FA on")
	if uerr != nil {
		// The codes exist only here now: show them on this answer
		// rather than lose them with the session's change.
		s.log.Error("portal session not updated after 2FA turned on; the one-time codes are shown at once", "user", sess.user, "err", uerr)
		s.render(w, r, http.StatusOK, "codes", "codes.title", view{Path: "/2fa/codes", CSRF: sess.csrf, SignedIn: true, User: sess.user, Codes: codes})
		return
	}
	http.Redirect(w, r, "/2fa/codes", http.StatusSeeOther)
}

// getCodes shows the new one-time codes until the user presses Done.
func (s *Server) getCodes(w http.ResponseWriter, r *http.Request, _ string, sess session) {
	if sess.codes == nil {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "codes", "codes.title", view{CSRF: sess.csrf, SignedIn: true, User: sess.user, Codes: sess.codes})
}

// postDisable turns 2FA off, given a current TOTP code or a one-time code:
// the account leaves the accounts file with its authenticators, one-time
// codes and passcodes, the reload ends its passcode sessions, and its
// other portal sessions end. Wrong codes count in the lockout counters,
// as on the sign-in form.
func (s *Server) postDisable(w http.ResponseWriter, r *http.Request, id string, sess session) {
	rt, store, st, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	s.disable(w, r, id, rt, store, st)
}

// disable is postDisable once the account is read; removing the last
// authenticator comes here too.
func (s *Server) disable(w http.ResponseWriter, r *http.Request, id string, rt Generation, store *auth.Store, st auth.TwoFAStatus) {
	if !st.On {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	if !st.HasTOTP() {
		s.setFlash(id, true, "off.admin", "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	res, ok := s.confirmCode(w, r, id, rt, store, st, r.PostForm.Get("code"), "", "turning 2FA off refused", "off.wrong")
	if !ok {
		return
	}
	name, removed, err := auth.DisableTwoFA(store, st.User)
	if err != nil {
		s.log.Error("turning 2FA off", "user", st.User, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	ended, err := s.sessions.removeOthers(name, id)
	if err != nil {
		s.log.Error("2FA turned off, but the account's other portal sessions could not be ended", "user", name, "err", err)
	}
	s.log.Info("2FA turned off", "client", clientIP(r).String(), "user", name, "second_factor", res.Kind.String(), "passcodes_removed", removed,
		"other_sessions_ended", ended)
	s.setFlash(id, false, "off.done", "")
	s.reload(id, name, "2FA off")
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}
