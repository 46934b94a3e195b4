package portal

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kanmon-mail/kanmon/auth"
)

// clientView is one mail client that presented the account password, as
// a row of the account page or of the enrollment page.
type clientView struct {
	// Label names the app ("Thunderbird 115.0", or "An app").
	Label string
	// Protocol is "IMAP", "POP3" or "SMTP"; IP is where it came from.
	Protocol, IP string
	// Count is how many times it presented the password.
	Count int64
	// First and Last are when it was first and last seen.
	First, Last string
	// Sentence says it all in one line, translated.
	Sentence string
	// Suggested is the name "Create a passcode for it" gives the new
	// passcode: the app's name, unique among the account's passcodes.
	Suggested string
}

// enrollView is the enrollment page's own data.
type enrollView struct {
	// Adding is true for one more authenticator, called Name; a first
	// one is named on the page.
	Adding bool
	Name   string
	// Clients are the apps that signed in with the account password in
	// the last 30 days: each will need a passcode once 2FA is on.
	Clients []clientView
	// ClientsUnavailable is set when they could not be read.
	ClientsUnavailable bool
}

// authenticatorView is one authenticator on the account page.
type authenticatorView struct {
	Name, Added string
	// Used is false when it was never used to sign in here; then Last*
	// are empty.
	Used             bool
	LastTime, LastIP string
}

// passwordClients returns user's record of kind as rows of a page, with
// unavailable set (and no rows) when it could not be read.
func (s *Server) passwordClients(lang string, kind auth.ClientKind, user string) (rows []clientView, unavailable bool) {
	if s.opts.Clients == nil {
		return nil, false
	}
	list, err := s.opts.Clients.Clients(kind, user)
	if err != nil {
		s.log.Warn("reading the apps that use the account password", "user", user, "err", err)
		return nil, true
	}
	for _, c := range list {
		rows = append(rows, clientRow(lang, kind, c))
	}
	return rows, false
}

// clientRow turns a record into a row of kind's wording.
func clientRow(lang string, kind auth.ClientKind, c auth.PasswordClient) clientView {
	v := clientView{
		Label: c.Label(), Protocol: protocolLabel(c.Protocol), IP: c.IP, Count: c.Count,
		First: formatTime(c.First), Last: formatTime(c.Last),
	}
	if v.Label == "" {
		v.Label = msg(lang, "clients.unnamed")
	}
	many, once := "clients.refused_row", "clients.refused_row_one"
	if kind == auth.ClientPassword {
		many, once = "clients.password_row", "clients.password_row_one"
	}
	if c.Count == 1 {
		v.Sentence = fmt.Sprintf(msg(lang, once), v.Label, v.Protocol, v.IP, v.First)
	} else {
		v.Sentence = fmt.Sprintf(msg(lang, many), v.Label, v.Protocol, v.IP, v.Count, v.First)
	}
	v.Suggested = c.Name
	if v.Suggested == "" || auth.ValidateApp(v.Suggested) != nil {
		v.Suggested = fmt.Sprintf(msg(lang, "clients.default_app"), v.Protocol)
	}
	return v
}

// uniqueAppNames makes each row's Suggested differ from the account's
// passcodes' names and from the rows before it: "Thunderbird",
// "Thunderbird 2", …
func uniqueAppNames(rows []clientView, passcodes []auth.AppPasscode) {
	taken := map[string]bool{}
	for _, pc := range passcodes {
		taken[strings.ToLower(pc.App)] = true
	}
	for i := range rows {
		base, name := rows[i].Suggested, rows[i].Suggested
		for n := 2; taken[strings.ToLower(name)]; n++ {
			suffix := " " + strconv.Itoa(n)
			if r := []rune(base); len(r)+len(suffix) > auth.MaxAppLen {
				base = strings.TrimSpace(string(r[:auth.MaxAppLen-len(suffix)]))
			}
			name = base + suffix
		}
		taken[strings.ToLower(name)] = true
		rows[i].Suggested = name
	}
}

// authenticatorRows are the account's authenticators with their last use
// (uses, by ID; nil shows none).
func authenticatorRows(st auth.TwoFAStatus, uses map[string]auth.LastUse) []authenticatorView {
	var out []authenticatorView
	for _, au := range st.Authenticators {
		v := authenticatorView{Name: au.Name, Added: formatTime(au.Added)}
		if u, ok := uses[au.ID]; ok {
			v.Used, v.LastTime, v.LastIP = true, formatTime(u.Time), u.ClientIP
		}
		out = append(out, v)
	}
	return out
}
