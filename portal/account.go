package portal

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

// timeLayout is how the pages show a time, in the server's time zone.
const timeLayout = "2006-01-02 15:04 MST"

// accountView is the account page's 2FA state and passcode list.
type accountView struct {
	// On is whether 2FA is on (the account is in the accounts file).
	On bool
	// TOTP is whether an authenticator is registered, since when.
	TOTP         bool
	TOTPEnrolled string
	// CodesLeft is how many one-time codes are unused.
	CodesLeft int
	// Passcodes are the app passcodes, in file order.
	Passcodes []passcodeView
	// LastUseUnavailable is set when the last use could not be read.
	LastUseUnavailable bool
	// Protocols are the scopes a new passcode may be limited to.
	Protocols []protocolView
	// Authenticators are the registered authenticator apps; CanAdd is
	// true while there is room for another (MaxAuthenticators).
	Authenticators    []authenticatorView
	CanAdd            bool
	MaxAuthenticators int
	// Refused are the apps still presenting the account password, whose
	// logins were refused; RefusedUnavailable is set when they could
	// not be read.
	Refused            []clientView
	RefusedUnavailable bool
}

// passcodeView is one row of the passcode list.
type passcodeView struct {
	App, Created, Scope string
	// Used is false for a passcode never used; then Last* are empty.
	Used                                       bool
	LastTime, LastIP, LastProtocol, LastClient string
}

// protocolView is a protocol as a checkbox: its value and its label.
type protocolView struct{ Value, Label string }

// settingsView is what a mail client needs.
type settingsView struct {
	// Host is the server name.
	Host string
	// Rows are the listeners: protocol, port, security.
	Rows []settingsRow
	// Outside is true when accounts without 2FA are refused outside
	// trusted_networks (require_2fa_outside).
	Outside bool
}

type settingsRow struct{ Protocol, Port, Security string }

// getAccount shows the account page. Coming here ends the pages that
// show a secret (their Done button leads here): the one-time codes, a new
// passcode and an unfinished enrollment are forgotten.
func (s *Server) getAccount(w http.ResponseWriter, r *http.Request, id string, sess session) {
	var fl flash
	if _, err := s.sessions.update(id, func(p *session) {
		p.codes, p.shown, p.pending, p.pendingName, p.pendingAdd = nil, nil, nil, "", false
		fl, p.flash = p.flash, flash{}
	}); err != nil {
		s.sessionsUnavailable(w, r, err)
		return
	}
	lang := requestLang(r)
	rt, _, st, ok := s.readAccount(w, r, sess)
	if !ok {
		return
	}
	v := view{
		CSRF: sess.csrf, SignedIn: true, User: sess.user,
		Account:  s.accountView(lang, st),
		Settings: s.settings(r, rt, lang),
	}
	if fl.key != "" {
		text := msg(lang, fl.key)
		if fl.arg != "" {
			text = fmt.Sprintf(text, fl.arg)
		}
		if fl.err {
			v.Error = text
		} else {
			v.Notice = text
		}
	}
	s.render(w, r, http.StatusOK, "account", "account.title", v)
}

// accountView builds the account page's data from the accounts file and
// the passcodes' last use.
func (s *Server) accountView(lang string, st auth.TwoFAStatus) accountView {
	a := accountView{On: st.On, TOTP: !st.TOTPEnrolled.IsZero(), CodesLeft: st.OneTimeCodesLeft}
	if a.TOTP {
		a.TOTPEnrolled = formatTime(st.TOTPEnrolled)
	}
	for _, p := range auth.ScopeProtocols {
		a.Protocols = append(a.Protocols, protocolView{Value: p, Label: protocolLabel(p)})
	}
	if !st.On {
		return a
	}
	a.MaxAuthenticators = auth.MaxAuthenticators
	a.CanAdd = a.TOTP && len(st.Authenticators) < auth.MaxAuthenticators
	a.Refused, a.RefusedUnavailable = s.passwordClients(lang, auth.ClientRefused, st.User)
	uniqueAppNames(a.Refused, st.Passcodes)
	var uses map[string]auth.LastUse
	if s.opts.LastUse != nil && (len(st.Passcodes) > 0 || len(st.Authenticators) > 0) {
		var err error
		if uses, err = s.opts.LastUse(); err != nil {
			s.log.Warn("reading the passcodes' last use", "err", err)
			a.LastUseUnavailable = true
		}
	}
	for _, pc := range st.Passcodes {
		pv := passcodeView{App: pc.App, Created: formatTime(pc.Created), Scope: msg(lang, "passcodes.scope_all")}
		if len(pc.Protocols) > 0 {
			var labels []string
			for _, p := range pc.Protocols {
				labels = append(labels, protocolLabel(p))
			}
			pv.Scope = strings.Join(labels, ", ")
		}
		if u, ok := uses[pc.ID()]; ok {
			pv.Used = true
			pv.LastTime, pv.LastIP, pv.LastProtocol, pv.LastClient = formatTime(u.Time), u.ClientIP, protocolLabel(u.Protocol), u.Client
		}
		a.Passcodes = append(a.Passcodes, pv)
	}
	a.Authenticators = authenticatorRows(st, uses)
	return a
}

// settings lists, per protocol, the port and TLS mode of each listener
// and the server name to use.
func (s *Server) settings(r *http.Request, rt Generation, lang string) settingsView {
	v := settingsView{Host: s.opts.MailHost, Outside: *rt.Config.Require2FAOutside}
	if v.Host == "" {
		v.Host = requestHost(r)
	}
	for _, proto := range auth.ScopeProtocols {
		for _, l := range rt.Config.Listeners {
			if l.Protocol != proto {
				continue
			}
			_, port, _ := net.SplitHostPort(l.Address)
			v.Rows = append(v.Rows, settingsRow{Protocol: protocolLabel(proto), Port: port, Security: securityLabel(lang, l.TLS)})
		}
	}
	return v
}

// requestHost is the host name the browser used, without the port.
func requestHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		return h
	}
	return r.Host
}

// protocolLabel names a protocol as mail clients do.
func protocolLabel(p string) string {
	switch p {
	case config.ProtocolIMAP:
		return "IMAP"
	case config.ProtocolPOP3:
		return "POP3"
	case config.ProtocolSubmission:
		return "SMTP"
	}
	return p
}

// securityLabel names a TLS mode as mail clients' settings do.
func securityLabel(lang, mode string) string {
	switch mode {
	case config.TLSImplicit:
		return "SSL/TLS"
	case config.TLSStartTLS:
		return "STARTTLS"
	}
	return msg(lang, "settings.security_none")
}

// formatTime shows t in the server's time zone.
func formatTime(t time.Time) string { return t.Local().Format(timeLayout) }

// setFlash leaves a message for the next account page. A message that
// cannot be kept (a shared store that does not answer) is logged and
// lost: the change it reports is done or refused either way.
func (s *Server) setFlash(id string, isErr bool, key, arg string) {
	if _, err := s.sessions.update(id, func(p *session) { p.flash = flash{key: key, arg: arg, err: isErr} }); err != nil {
		s.log.Warn("a message for the account page was lost", "key", key, "err", err)
	}
}

// reload runs the server's in-process reload after a change to the
// accounts file, so that it takes effect at once (and a revoked
// passcode's sessions end). When it fails, the change is written but not
// yet in force: the log says so, and the user is told.
func (s *Server) reload(id, user, change string) {
	if err := s.opts.Reload(); err != nil {
		s.log.Error("reload after a portal change failed; the change takes effect at the next successful reload",
			"user", user, "change", change, "err", err)
		s.setFlash(id, true, "reload.failed", "")
	}
}
