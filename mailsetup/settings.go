// Package mailsetup produces the documents with which mail apps set
// themselves up from an email address alone: Thunderbird's autoconfig file
// (the ISPDB clientConfig format), Outlook's autodiscover answer (the POX
// schema of MS-OXDSCLI), and an Apple configuration profile (.mobileconfig)
// for iOS and macOS Mail, signed with the portal's certificate.
//
// Every document describes the same Settings: the mail host, the
// client-facing listeners with TLS, and which user name the app sends.
// A listener with tls = "none" is never advertised: it exists for
// loopback and trusted load balancers, and a client told to use it would
// send its passcode in the clear. Autoconfig and autodiscover are public
// and unauthenticated, so Settings holds nothing secret; only the Apple
// profile, made for one signed-in user, carries a passcode.
//
// NewHandler serves autoconfig and autodiscover over HTTP; docs/mailsetup.md
// tells the admin which DNS names to point at it.
package mailsetup

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/kanmon-mail/kanmon/config"
)

// Limits of host names and addresses, in octets.
const (
	// MaxHostLength is the longest host name: RFC 1035 §2.3.4 allows 255
	// octets on the wire, 253 as text without the final dot.
	MaxHostLength = 253
	// maxLabelLength is the longest DNS label (RFC 1035 §2.3.4).
	maxLabelLength = 63
	// MaxLocalPartLength is the longest local part of an address
	// (RFC 5321 §4.5.3.1.1).
	MaxLocalPartLength = 64
	// MaxDomainLength is the longest domain of an address
	// (RFC 5321 §4.5.3.1.2).
	MaxDomainLength = 255
	// MaxAddressLength is the longest email address accepted: local
	// part, "@" and domain (RFC 5321 §4.5.3.1.1 and §4.5.3.1.2), the
	// same bound as username.MaxLength.
	MaxAddressLength = MaxLocalPartLength + 1 + MaxDomainLength
)

// UserForm says which user name a mail app should send at login.
type UserForm int

// The user forms.
const (
	// UserLocalPart sends the part of the address before the "@"
	// ("alice"): the form when [users] lists no domains, so that kanmon
	// takes names as typed and "alice@example.edu" would be another
	// account. The zero value.
	UserLocalPart UserForm = iota
	// UserAddress sends the whole address ("alice@example.edu"): the
	// form when [users] lists domains, which fold it to the account.
	UserAddress
)

// Placeholder is the ISPDB placeholder for the form, which Thunderbird
// replaces with the part of the address the user typed.
func (f UserForm) Placeholder() string {
	if f == UserAddress {
		return "%EMAILADDRESS%"
	}
	return "%EMAILLOCALPART%"
}

// LoginName is the user name to send for email, in this form.
func (f UserForm) LoginName(email string) string {
	if f == UserAddress {
		return email
	}
	local, _, _ := strings.Cut(email, "@")
	return local
}

// String names the form, for logs.
func (f UserForm) String() string {
	if f == UserAddress {
		return "address"
	}
	return "local part"
}

// Listener is one client-facing socket as apps should reach it.
type Listener struct {
	// Protocol is config.ProtocolIMAP, config.ProtocolPOP3 or
	// config.ProtocolSubmission.
	Protocol string
	// Port is the TCP port clients connect to.
	Port int
	// TLS is config.TLSImplicit or config.TLSStartTLS; a listener with
	// config.TLSNone is left out of every document.
	TLS string
}

// Settings is what the setup documents describe. All of it is public.
type Settings struct {
	// Host is the mail host name apps connect to ([portal] mail_host),
	// e.g. "mail.example.edu". Required.
	Host string
	// Domain is the email domain, e.g. "example.edu": the emailProvider
	// id and domain of the autoconfig file. Empty when [users] lists no
	// domains; Host stands in for it then.
	Domain string
	// DisplayName names the service in the apps, e.g. the portal's
	// issuer "Example University". Empty: Domain, else Host.
	DisplayName string
	// Listeners are the sockets to advertise, in any order; the documents
	// sort them (see ordered).
	Listeners []Listener
	// UserForm is the user name apps send: the whole address when
	// [users] lists domains, the local part otherwise.
	UserForm UserForm
}

// FromConfig builds the Settings of a loaded config. host is the mail host
// name; when empty, [portal] mail_host is used (the caller falls back to
// the name the browser used when that is empty too). Every listener but
// those with tls = "none" is listed, with its port; a listener on the
// same protocol, port and TLS as an earlier one (0.0.0.0:993 and
// [::]:993) is listed once.
func FromConfig(cfg *config.Config, host string) Settings {
	s := Settings{Host: host, DisplayName: config.DefaultPortalIssuer}
	if cfg == nil {
		return s
	}
	if p := cfg.Portal; p != nil {
		if s.Host == "" {
			s.Host = p.MailHost
		}
		if p.Issuer != "" {
			s.DisplayName = p.Issuer
		}
	}
	if len(cfg.Users.Domains) > 0 {
		s.Domain = strings.ToLower(cfg.Users.Domains[0])
	}
	if cfg.Users.Names.HasDomains() {
		s.UserForm = UserAddress
	}
	for _, l := range cfg.Listeners {
		tlsMode := l.TLS
		if tlsMode == "" {
			tlsMode = config.TLSImplicit // the config's default
		}
		if tlsMode == config.TLSNone {
			continue
		}
		_, portText, err := net.SplitHostPort(l.Address)
		if err != nil {
			continue
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			continue
		}
		ls := Listener{Protocol: l.Protocol, Port: port, TLS: tlsMode}
		if !slices.Contains(s.Listeners, ls) {
			s.Listeners = append(s.Listeners, ls)
		}
	}
	return s
}

// name is what the documents call the service: DisplayName, else Domain,
// else Host.
func (s Settings) name() string {
	return cmp.Or(s.DisplayName, s.Domain, s.Host)
}

// providerDomain is the domain the documents are for: Domain, else Host.
func (s Settings) providerDomain() string {
	return cmp.Or(s.Domain, s.Host)
}

// ErrNoListener is returned when Settings has no listener with TLS that
// a document needs.
var ErrNoListener = errors.New("no listener with TLS to advertise")

// check validates Host, Domain and every listener.
func (s Settings) check() error {
	if err := checkHost(s.Host); err != nil {
		return fmt.Errorf("mail host %q: %w", s.Host, err)
	}
	if s.Domain != "" {
		if _, err := netip.ParseAddr(s.Domain); err == nil {
			return fmt.Errorf("domain %q: want a DNS name, not an address", s.Domain)
		}
		if err := checkHost(s.Domain); err != nil {
			return fmt.Errorf("domain %q: %w", s.Domain, err)
		}
	}
	for _, l := range s.Listeners {
		switch l.Protocol {
		case config.ProtocolIMAP, config.ProtocolPOP3, config.ProtocolSubmission:
		default:
			return fmt.Errorf("listener protocol %q: want %s, %s or %s", l.Protocol,
				config.ProtocolIMAP, config.ProtocolPOP3, config.ProtocolSubmission)
		}
		switch l.TLS {
		case config.TLSImplicit, config.TLSStartTLS, config.TLSNone:
		default:
			return fmt.Errorf("%s listener tls %q: want %s, %s or %s", l.Protocol, l.TLS,
				config.TLSImplicit, config.TLSStartTLS, config.TLSNone)
		}
		if l.Port < 1 || l.Port > 65535 {
			return fmt.Errorf("%s listener port %d: want 1 to 65535", l.Protocol, l.Port)
		}
	}
	return nil
}

// ordered returns the listeners to advertise for protocol: those with
// TLS, implicit TLS before STARTTLS (RFC 8314 §3 prefers implicit TLS),
// then by port, without duplicates. Apps take the first as the default.
func (s Settings) ordered(protocol string) []Listener {
	var out []Listener
	for _, l := range s.Listeners {
		if l.Protocol != protocol || (l.TLS != config.TLSImplicit && l.TLS != config.TLSStartTLS) {
			continue
		}
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	slices.SortStableFunc(out, func(a, b Listener) int {
		return cmp.Or(cmp.Compare(tlsRank(a.TLS), tlsRank(b.TLS)), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// first is the preferred listener for protocol, and whether there is one.
func (s Settings) first(protocol string) (Listener, bool) {
	ls := s.ordered(protocol)
	if len(ls) == 0 {
		return Listener{}, false
	}
	return ls[0], true
}

// tlsRank orders implicit TLS before STARTTLS.
func tlsRank(mode string) int {
	if mode == config.TLSImplicit {
		return 0
	}
	return 1
}

// checkHost accepts a DNS name (letters, digits, hyphens, dots) or an IP
// address, without a port.
func checkHost(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if len(s) > MaxHostLength {
		return fmt.Errorf("longer than %d octets", MaxHostLength)
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > maxLabelLength || label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("not a host name")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return errors.New("not a host name")
			}
		}
	}
	return nil
}

// checkAddress accepts local@domain with a domain that is a DNS name, a
// local part of 1 to MaxLocalPartLength octets of UTF-8 without space,
// control characters, quotes, backslashes, brackets or other specials, and at most
// MaxAddressLength octets in all. It is not a full RFC 5322 parser: it
// keeps out what would not be a login name.
func checkAddress(s string) error {
	if len(s) > MaxAddressLength {
		return fmt.Errorf("longer than %d octets", MaxAddressLength)
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || strings.Contains(domain, "@") {
		return errors.New("want one @")
	}
	if local == "" || len(local) > MaxLocalPartLength {
		return fmt.Errorf("local part empty or longer than %d octets", MaxLocalPartLength)
	}
	if !utf8.ValidString(local) {
		return errors.New("local part is not UTF-8")
	}
	for _, r := range local {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`"\<>()[],;:`, r) {
			return errors.New("local part has a character not allowed")
		}
	}
	if len(domain) > MaxDomainLength {
		return fmt.Errorf("domain longer than %d octets", MaxDomainLength)
	}
	if _, err := netip.ParseAddr(domain); err == nil {
		return errors.New("domain is an address literal")
	}
	if err := checkHost(domain); err != nil {
		return fmt.Errorf("domain: %w", err)
	}
	return nil
}
