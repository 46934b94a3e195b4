package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode"
)

// Defaults of the [portal] table.
const (
	// DefaultPortalIssuer names the service in authenticator apps.
	DefaultPortalIssuer = "kanmon"
	// DefaultPortalSessionIdle ends a portal session after this long
	// without a request.
	DefaultPortalSessionIdle = 15 * time.Minute
	// DefaultPortalSessionMax ends a portal session this long after its
	// sign-in, however busy.
	DefaultPortalSessionMax = 8 * time.Hour
	// maxIssuerLen bounds issuer, in characters: authenticator apps show
	// it on one line.
	maxIssuerLen = 64
)

// Portal is the [portal] section. It starts the self-service web portal,
// where users turn two-factor authentication on and off and manage their
// own app passcodes (docs/portal.md). The portal serves HTTPS with the [tls] certificate,
// so [tls] is required with it, and checks account passwords at
// [backend.imap], which is required too. Without [portal] there is no
// portal. Changes take effect at the next restart, not on reload.
type Portal struct {
	// Address is host:port of the portal's HTTPS listener, e.g.
	// "0.0.0.0:443". Required.
	Address string `toml:"address"`
	// Issuer names the service in authenticator apps (the otpauth
	// issuer, shown above the 6-digit code), e.g. "Example University".
	// No colon. Default kanmon.
	Issuer string `toml:"issuer"`
	// MailHost is the server name shown to users in the portal's client
	// settings (the host they put in Thunderbird), e.g.
	// "mail.example.edu". Default: the host of the first [[listener]];
	// when that is a wildcard (0.0.0.0, ::) or empty, the host name the
	// browser used to reach the portal.
	MailHost string `toml:"mail_host"`
	// SessionIdle ends a portal session after this long without a
	// request. Default 15m.
	SessionIdle Duration `toml:"session_idle"`
	// SessionMax ends a portal session this long after sign-in, however
	// busy. At least SessionIdle. Default 8h.
	SessionMax Duration `toml:"session_max"`
}

// finishPortal applies [portal]'s defaults and checks it: an HTTPS
// address of its own, the certificate and the IMAP backend it needs.
func (c *Config) finishPortal() error {
	p := c.Portal
	if p == nil {
		return nil
	}
	perr := func(key, format string, args ...any) error {
		return c.errorf("portal."+key, "portal: %s", fmt.Sprintf(format, args...))
	}
	if p.Address == "" {
		return perr("address", "address is required (host:port of the portal's HTTPS listener)")
	}
	if _, _, err := net.SplitHostPort(p.Address); err != nil {
		return perr("address", "address %q: want host:port", p.Address)
	}
	for _, l := range c.Listeners {
		if l.Address == p.Address {
			return perr("address", "address %s is also a [[listener]] address", p.Address)
		}
	}
	if p.Address == c.MetricsAddress {
		return perr("address", "address %s is also metrics_address", p.Address)
	}
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		where := "portal"
		if c.Line("tls") != 0 {
			where = "tls.cert"
			if c.TLS.Cert != "" {
				where = "tls.key"
			}
		}
		return c.errorf(where, "[portal] needs [tls] cert and key: the portal serves HTTPS with the listeners' certificate")
	}
	if c.Backend.IMAP == nil {
		return c.errorf("portal", "[portal] needs [backend.imap]: the portal checks account passwords with an IMAP login there")
	}
	if p.Issuer == "" {
		p.Issuer = DefaultPortalIssuer
	}
	if err := checkIssuer(p.Issuer); err != nil {
		return perr("issuer", "issuer %q: %v", p.Issuer, err)
	}
	if p.MailHost == "" {
		p.MailHost = defaultMailHost(c.Listeners)
	} else if err := checkHostName(p.MailHost); err != nil {
		return perr("mail_host", "mail_host %q: %v", p.MailHost, err)
	}
	if p.SessionIdle.Duration == 0 {
		p.SessionIdle.Duration = DefaultPortalSessionIdle
	}
	if p.SessionIdle.Duration < 0 {
		return perr("session_idle", "session_idle must be positive")
	}
	if p.SessionMax.Duration == 0 {
		p.SessionMax.Duration = max(DefaultPortalSessionMax, p.SessionIdle.Duration)
	}
	if p.SessionMax.Duration < p.SessionIdle.Duration {
		return perr("session_max", "session_max %s is shorter than session_idle %s", p.SessionMax.Duration, p.SessionIdle.Duration)
	}
	return nil
}

// defaultMailHost is the host of the first listener, or "" when that is a
// wildcard or empty (the portal then shows the host the browser used).
func defaultMailHost(ls []Listener) string {
	if len(ls) == 0 {
		return ""
	}
	host, _, err := net.SplitHostPort(ls[0].Address)
	if err != nil || host == "" {
		return ""
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		return ""
	}
	return host
}

// checkIssuer accepts a printable name without a colon: the otpauth label
// is "issuer:account", and apps split it at the first colon.
func checkIssuer(s string) error {
	switch {
	case len([]rune(s)) > maxIssuerLen:
		return fmt.Errorf("longer than %d characters", maxIssuerLen)
	case strings.Contains(s, ":"):
		return fmt.Errorf("must not contain a colon")
	case strings.TrimSpace(s) != s:
		return fmt.Errorf("leading or trailing space")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("holds a control character")
		}
	}
	return nil
}

// checkHostName accepts a DNS name or an IP address, without a port.
func checkHostName(s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if len(s) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return fmt.Errorf("want a host name such as mail.example.edu, without a port")
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Errorf("want a host name such as mail.example.edu, without a port")
			}
		}
	}
	return nil
}
