package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// finish applies defaults, resolves paths and validates. data is the raw
// file, used to find line numbers for errors.
func (c *Config) finish(data []byte) error {
	lines := newLineFinder(data)
	errf := func(key string, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", c.File, lines.find(key), fmt.Sprintf(format, args...))
	}
	if c.StateDir == "" {
		c.StateDir = "state"
	}
	if c.Accounts == "" {
		c.Accounts = "accounts.toml"
	}
	c.StateDir = c.resolve(c.StateDir)
	c.Accounts = c.resolve(c.Accounts)
	if c.Require2FAOutside == nil {
		t := true
		c.Require2FAOutside = &t
	}
	if c.PreAuthTimeout.Duration == 0 {
		c.PreAuthTimeout.Duration = DefaultPreAuthTimeout
	}
	if c.IdleTimeout.Duration == 0 {
		c.IdleTimeout.Duration = DefaultIdleTimeout
	}
	if c.IdleTimeout.Duration < MinIdleTimeout {
		return errf("idle_timeout", "idle_timeout %s is below the minimum %s (RFC 9051 §5.4, RFC 2177 IDLE)", c.IdleTimeout.Duration, MinIdleTimeout)
	}
	if c.PreAuthTimeout.Duration < 0 {
		return errf("preauth_timeout", "preauth_timeout must be positive")
	}
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		return errf("log_level", "log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	c.TrustedPrefixes = nil
	for _, n := range c.TrustedNetworks {
		p, err := parsePrefix(n)
		if err != nil {
			return errf(n, "trusted_networks: %q is not a CIDR prefix or address", n)
		}
		c.TrustedPrefixes = append(c.TrustedPrefixes, p)
	}
	if len(c.Listeners) == 0 {
		return errf("", "no [[listener]]: at least one is required")
	}
	needTLS := false
	seen := map[string]bool{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		l.Line = lines.findNth("[[listener]]", i)
		lerr := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: listener: %s", c.File, l.Line, fmt.Sprintf(format, args...))
		}
		switch l.Protocol {
		case ProtocolIMAP, ProtocolPOP3, ProtocolSubmission:
		case "":
			return lerr("protocol is required (imap, pop3 or submission)")
		default:
			return lerr("protocol %q: want imap, pop3 or submission", l.Protocol)
		}
		if l.TLS == "" {
			l.TLS = TLSImplicit
		}
		switch l.TLS {
		case TLSImplicit, TLSStartTLS:
			needTLS = true
		case TLSNone:
		default:
			return lerr("tls %q: want implicit, starttls or none", l.TLS)
		}
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			return lerr("address %q: want host:port", l.Address)
		}
		if seen[l.Address] {
			return lerr("address %s is used twice", l.Address)
		}
		seen[l.Address] = true
		if c.Backend.For(l.Protocol) == nil {
			return lerr("protocol %s has no [backend.%s]", l.Protocol, l.Protocol)
		}
	}
	if needTLS {
		if c.TLS.Cert == "" || c.TLS.Key == "" {
			return errf("[tls]", "[tls] cert and key are required by the implicit/starttls listeners")
		}
	}
	c.TLS.Cert = c.resolve(c.TLS.Cert)
	c.TLS.Key = c.resolve(c.TLS.Key)
	for _, proto := range []string{ProtocolIMAP, ProtocolPOP3, ProtocolSubmission} {
		b := c.Backend.For(proto)
		if b == nil {
			continue
		}
		if err := c.finishBackend(proto, b, lines); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) finishBackend(proto string, b *Backend, lines lineFinder) error {
	line := lines.find("[backend." + proto + "]")
	berr := func(format string, args ...any) error {
		return fmt.Errorf("%s:%d: backend.%s: %s", c.File, line, proto, fmt.Sprintf(format, args...))
	}
	host, _, err := net.SplitHostPort(b.Address)
	if err != nil {
		return berr("address %q: want host:port", b.Address)
	}
	if b.TLS == "" {
		b.TLS = TLSNone
	}
	switch b.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return berr("tls %q: want none, starttls or implicit", b.TLS)
	}
	if b.ServerName == "" {
		b.ServerName = host
	}
	if b.Timeout.Duration == 0 {
		b.Timeout.Duration = DefaultBackendTimeout
	}
	if b.MasterUser == "" {
		return berr("master_user is required")
	}
	switch {
	case b.MasterPassword != "" && b.MasterPasswordFile != "":
		return berr("set master_password or master_password_file, not both")
	case b.MasterPasswordFile != "":
		b.MasterPasswordFile = c.resolve(b.MasterPasswordFile)
		pw, err := os.ReadFile(b.MasterPasswordFile)
		if err != nil {
			return berr("master_password_file: %v", err)
		}
		b.MasterPassword = strings.TrimRight(string(pw), "\r\n")
		if b.MasterPassword == "" {
			return berr("master_password_file %s is empty", b.MasterPasswordFile)
		}
	case b.MasterPassword == "":
		return berr("master_password or master_password_file is required")
	}
	b.CAFile = c.resolve(b.CAFile)
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// lineFinder maps a key or table header to the first line mentioning it.
// go-toml reports positions for syntax and type errors; semantic errors
// found after decoding use this to point at the right line.
type lineFinder struct{ lines []string }

func newLineFinder(data []byte) lineFinder {
	return lineFinder{lines: strings.Split(string(data), "\n")}
}

// find returns the 1-based line of the first non-comment line containing
// needle, or 1 when not found.
func (f lineFinder) find(needle string) int {
	return f.findNth(needle, 0)
}

// findNth returns the line of the n-th (0-based) occurrence of needle.
func (f lineFinder) findNth(needle string, n int) int {
	if needle == "" {
		return 1
	}
	for i, l := range f.lines {
		code, _, _ := strings.Cut(l, "#")
		if strings.Contains(code, needle) || (strings.HasPrefix(needle, "[") && strings.Contains(strings.ReplaceAll(code, " ", ""), needle)) {
			if n == 0 {
				return i + 1
			}
			n--
		}
	}
	return 1
}
