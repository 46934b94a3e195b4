package portal

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/mailsetup"
)

// appleProfileScope is what the Apple profile's passcode may do: the
// profile sets up IMAP and SMTP, nothing else.
var appleProfileScope = []string{config.ProtocolIMAP, config.ProtocolSubmission}

// mailSetupPath reports whether path is one of the unauthenticated
// documents mail apps fetch to set themselves up (autoconfig,
// autodiscover, whatever the case of the latter: Outlook varies it).
func mailSetupPath(path string) bool {
	return path == mailsetup.AutoconfigPath || path == mailsetup.WellKnownAutoconfigPath ||
		strings.EqualFold(path, mailsetup.AutodiscoverPath)
}

// mailSettings is what the setup documents describe, from the
// configuration in force. The mail host is [portal] mail_host, never the
// name the browser used: an app asks autoconfig.<domain> or the bare
// domain, which are not the mail server.
func (s *Server) mailSettings(*http.Request) mailsetup.Settings {
	return mailsetup.FromConfig(s.opts.Generation().Config, s.opts.MailHost)
}

// appleEmail is the address the profile's account sends as: the account
// name when it is an address, else the name at [users]' first domain, else
// at the mail host.
func appleEmail(user string, settings mailsetup.Settings) string {
	if strings.Contains(user, "@") {
		return user
	}
	if settings.Domain != "" {
		return user + "@" + settings.Domain
	}
	return user + "@" + settings.Host
}

// postAppleProfile makes an app passcode, named by the form ("iPhone" when
// empty) and limited to IMAP and SMTP, and answers with a signed Apple
// configuration profile that carries it: the phone is set up without the
// user ever typing the passcode. The file is the passcode's only copy
// and is never stored here; deleting the passcode disables the profile's
// account.
func (s *Server) postAppleProfile(w http.ResponseWriter, r *http.Request, id string, sess session) {
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if name == "" {
		name = "iPhone"
	}
	refuse := func(key string) {
		s.setFlash(id, true, key, "")
		http.Redirect(w, r, "/account", http.StatusSeeOther)
	}
	rt, store, st, ok := s.newPasscodeAllowed(w, r, id, sess, name)
	if !ok {
		return
	}
	cert := s.opts.Certificate
	if cert == nil || cert() == nil {
		s.log.Error("Apple profile: no certificate to sign it with", "user", st.User)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	settings := mailsetup.FromConfig(rt.Config, s.opts.MailHost)
	if settings.Host == "" {
		// No mail_host, and the first listener on a wildcard: the name
		// the browser used, as the account page's settings show it.
		settings.Host = requestHost(r)
	}
	email := appleEmail(st.User, settings)
	login := st.User
	if settings.UserForm == mailsetup.UserAddress {
		login = settings.UserForm.LoginName(email) // as autoconfig tells the other apps
	}
	// Build it once without the passcode first: a configuration that
	// cannot make a profile (no IMAP or SMTP listener with TLS) must not
	// leave a passcode behind.
	profile := mailsetup.Profile{
		Settings: settings, Email: email, User: login, AccountName: name,
	}
	if _, err := mailsetup.MobileConfig(profile); err != nil {
		s.log.Error("Apple profile: the listeners do not make one", "user", st.User, "err", err)
		refuse("apple.unavailable")
		return
	}
	code, err := auth.AddScopedPasscode(store, rt.Config.StateDir, st.User, name, appleProfileScope)
	if errors.Is(err, auth.ErrUnavailable) {
		s.log.Error("Apple profile: the accounts database does not answer", "user", st.User, "err", err)
		s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
		return
	}
	if err != nil {
		s.log.Warn("Apple profile: adding the passcode failed", "user", st.User, "app", name, "err", err)
		refuse("passcodes.add_failed")
		return
	}
	profile.Passcode = code
	data, err := mailsetup.MobileConfig(profile)
	var signed []byte
	if err == nil {
		signed, err = mailsetup.SignProfile(data, cert())
	}
	clear(data)
	if err != nil {
		// The passcode exists, but nobody has it: take it back.
		s.log.Error("Apple profile: making or signing it failed; its passcode is deleted", "user", st.User, "app", name, "err", err)
		if _, _, rerr := auth.RevokePasscode(store, st.User, name); rerr != nil {
			s.log.Error("Apple profile: deleting the unused passcode failed", "user", st.User, "app", name, "err", rerr)
		}
		refuse("apple.unavailable")
		return
	}
	s.log.Info("passcode added for an Apple profile", "client", clientIP(r).String(), "user", st.User, "app", name,
		"protocols", auth.FormatProtocols(appleProfileScope))
	s.reload(id, st.User, "passcode added")
	h := w.Header()
	h.Set("Content-Type", mailsetup.MobileConfigContentType)
	h.Set("Content-Disposition", `attachment; filename="`+appleFileName(name)+`"`)
	h.Set("Content-Length", strconv.Itoa(len(signed)))
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(signed)
}

// appleFileName is the profile's file name: the passcode's name in ASCII
// letters, digits and hyphens, then .mobileconfig.
func appleFileName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		case r == ' ' || r == '_':
			b.WriteByte('-')
		}
	}
	base := strings.Trim(b.String(), "-")
	if base == "" {
		base = "mail"
	}
	return base + ".mobileconfig"
}
