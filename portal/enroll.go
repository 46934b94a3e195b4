package portal

import (
	"errors"
	"net/http"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/lockout"
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
	secret, err := otp.NewSecret()
	if err != nil {
		s.log.Error("making a TOTP secret", "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if _, err := s.sessions.update(id, func(p *session) { p.pending = secret }); err != nil {
		s.sessionsUnavailable(w, r, err)
		return
	}
	http.Redirect(w, r, "/2fa/enroll", http.StatusSeeOther)
}

// getEnroll shows the pending key, its QR code and the code form.
func (s *Server) getEnroll(w http.ResponseWriter, r *http.Request, _ string, sess session) {
	if sess.pending == nil {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "enroll", "enroll.title", view{
		CSRF: sess.csrf, SignedIn: true, User: sess.user, Key: otp.FormatKey(sess.pending),
	})
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
// registers the authenticator (2FA turns on), and the new one-time codes
// are shown; the code is spent, so it cannot sign in afterwards. The
// account's other portal sessions end.
func (s *Server) postEnroll(w http.ResponseWriter, r *http.Request, id string, sess session) {
	if sess.pending == nil {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	step, ok := otp.Verify(sess.pending, r.PostForm.Get("code"), s.now())
	if ok {
		var err error
		if ok, err = s.replay.Claim(sess.user, step); err != nil {
			s.log.Error("TOTP replay guard unavailable; enrollment refused", "client", clientIP(r).String(), "user", sess.user, "err", err)
			s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
			return
		}
	}
	if !ok {
		s.log.Info("enrollment code wrong", "client", clientIP(r).String(), "user", sess.user)
		s.render(w, r, http.StatusOK, "enroll", "enroll.title", view{
			Path: "/2fa/enroll", CSRF: sess.csrf, SignedIn: true, User: sess.user,
			Key: otp.FormatKey(sess.pending), Error: msg(requestLang(r), "enroll.wrong"),
		})
		return
	}
	rt, store, _, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	codes, err := auth.EnrollTOTP(store, rt.Config.StateDir, sess.user, sess.pending)
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
// the account leaves the accounts file with its authenticator, one-time
// codes and passcodes, the reload ends its passcode sessions, and its
// other portal sessions end. Wrong codes count in the lockout counters,
// as on the sign-in form.
func (s *Server) postDisable(w http.ResponseWriter, r *http.Request, id string, sess session) {
	start := time.Now()
	code := r.PostForm.Get("code")
	ip := clientIP(r)
	rt, store, st, ok := s.accountForChange(w, r, id, sess)
	if !ok {
		return
	}
	if !st.On {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	if st.TOTPEnrolled.IsZero() {
		s.setFlash(id, true, "off.admin", "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	refuse := func(reason string, info *lockout.FailureInfo) {
		attrs := []any{"client", ip.String(), "user", st.User, "reason", reason}
		if info != nil {
			attrs = append(attrs, "lockout", *info)
		}
		s.log.Info("turning 2FA off refused", attrs...)
		wait(start, max(s.opts.Guard.Delay(s.tarpit.fail(ip, time.Now())), s.minFailure))
		s.setFlash(id, true, "off.wrong", "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
	}
	if code == "" || len(code) > maxCodeLen {
		refuse(reasonNoCode, nil)
		return
	}
	secret := "\x00" + code
	switch v := s.opts.Guard.Check(st.User, ip, secret); v.Outcome {
	case lockout.Unavailable:
		s.log.Error("lockout state unavailable", "user", st.User, "err", v.Err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	case lockout.Locked, lockout.Stale:
		refuse(v.String(), nil)
		return
	}
	kind, ok, err := auth.CheckSecondFactor(store, rt.Config.StateDir, st.User, code, s.now(), s.replay)
	if err != nil {
		s.log.Error("checking a second factor", "user", st.User, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if !ok {
		info := s.opts.Guard.Failure(st.User, ip, secret)
		refuse(reasonWrongCode, &info)
		return
	}
	name, removed, err := auth.DisableTwoFA(store, st.User)
	if err != nil {
		s.log.Error("turning 2FA off", "user", st.User, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	s.tarpit.reset(ip)
	ended, err := s.sessions.removeOthers(name, id)
	if err != nil {
		s.log.Error("2FA turned off, but the account's other portal sessions could not be ended", "user", name, "err", err)
	}
	s.log.Info("2FA turned off", "client", ip.String(), "user", name, "second_factor", kind.String(), "passcodes_removed", removed,
		"other_sessions_ended", ended)
	s.setFlash(id, false, "off.done", "")
	s.reload(id, name, "2FA off")
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}
