package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// finish applies defaults, resolves paths and validates. Errors point at
// the offending key's line, found by key path in c.keys.
func (c *Config) finish() error {
	if c.StateDir == "" {
		c.StateDir = "state"
	}
	if c.Accounts == "" {
		c.Accounts = "accounts.toml"
	}
	c.StateDir = c.resolve(c.StateDir)
	if IsDatabaseURL(c.Accounts) {
		u, err := c.databaseURL(c.Accounts)
		if err != nil {
			return c.errorf("accounts", "accounts: %v", err)
		}
		c.AccountsURL = u
	} else {
		c.Accounts = c.resolve(c.Accounts)
	}
	if c.Require2FAOutside == nil {
		t := true
		c.Require2FAOutside = &t
	}
	if c.PreAuthTimeout.Duration == 0 {
		c.PreAuthTimeout.Duration = DefaultPreAuthTimeout
	}
	if c.PreAuthTimeout.Duration < 0 {
		return c.errorf("preauth_timeout", "preauth_timeout must be positive")
	}
	if c.IdleTimeout.Duration == 0 {
		c.IdleTimeout.Duration = DefaultIdleTimeout
	}
	if c.IdleTimeout.Duration < MinIdleTimeout {
		return c.errorf("idle_timeout", "idle_timeout %s is below the minimum %s (RFC 9051 §5.4, RFC 2177 IDLE)", c.IdleTimeout.Duration, MinIdleTimeout)
	}
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		return c.errorf("log_level", "log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	c.TrustedPrefixes = nil
	for i, n := range c.TrustedNetworks {
		p, err := parsePrefix(n)
		if err != nil {
			return c.errorf(fmt.Sprintf("trusted_networks[%d]", i), "trusted_networks: %q is not a CIDR prefix or address", n)
		}
		c.TrustedPrefixes = append(c.TrustedPrefixes, p)
	}
	if err := c.finishListeners(); err != nil {
		return err
	}
	if err := c.finishClientIP(); err != nil {
		return err
	}
	if err := c.finishOperations(); err != nil {
		return err
	}
	if err := c.finishPortal(); err != nil {
		return err
	}
	if err := c.finishUsers(); err != nil {
		return err
	}
	if err := c.finishRedis(); err != nil {
		return err
	}
	c.TLS.Cert = c.resolve(c.TLS.Cert)
	c.TLS.Key = c.resolve(c.TLS.Key)
	for _, proto := range []string{ProtocolIMAP, ProtocolPOP3, ProtocolSubmission} {
		if b := c.Backend.For(proto); b != nil {
			if err := c.finishBackend(proto, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// finishListeners checks each [[listener]] and that [tls] is there when a
// listener needs it.
func (c *Config) finishListeners() error {
	if len(c.Listeners) == 0 {
		return c.errorf("listener", "no [[listener]]: at least one is required")
	}
	tlsUser := -1 // first listener that needs [tls]
	seen := map[string]bool{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		at := func(key string) string { return fmt.Sprintf("listener[%d]%s", i, key) }
		l.Line = c.Line(at(""))
		lerr := func(key, format string, args ...any) error {
			return c.errorf(at(key), "listener: %s", fmt.Sprintf(format, args...))
		}
		switch l.Protocol {
		case ProtocolIMAP, ProtocolPOP3, ProtocolSubmission:
		case "":
			return lerr(".protocol", "protocol is required (imap, pop3 or submission)")
		default:
			return lerr(".protocol", "protocol %q: want imap, pop3 or submission", l.Protocol)
		}
		if l.TLS == "" {
			l.TLS = TLSImplicit
		}
		switch l.TLS {
		case TLSImplicit, TLSStartTLS:
			if tlsUser < 0 {
				tlsUser = i
			}
		case TLSNone:
		default:
			return lerr(".tls", "tls %q: want implicit, starttls or none", l.TLS)
		}
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			return lerr(".address", "address %q: want host:port", l.Address)
		}
		if seen[l.Address] {
			return lerr(".address", "address %s is used twice", l.Address)
		}
		seen[l.Address] = true
		if c.Backend.For(l.Protocol) == nil {
			return lerr(".protocol", "protocol %s has no [backend.%s]", l.Protocol, l.Protocol)
		}
	}
	if tlsUser >= 0 && (c.TLS.Cert == "" || c.TLS.Key == "") {
		where := "tls.cert"
		if c.TLS.Cert != "" {
			where = "tls.key"
		}
		if c.Line("tls") == 0 { // no [tls] at all: blame the listener
			where = fmt.Sprintf("listener[%d].tls", tlsUser)
		}
		return c.errorf(where, "[tls] cert and key are required by the implicit/starttls listeners")
	}
	return nil
}

// finishBackend checks [backend.proto], applies its defaults and reads its
// master_password_file.
func (c *Config) finishBackend(proto string, b *Backend) error {
	berr := func(key, format string, args ...any) error {
		return c.errorf("backend."+proto+"."+key, "backend.%s: %s", proto, fmt.Sprintf(format, args...))
	}
	host, _, err := net.SplitHostPort(b.Address)
	if err != nil {
		return berr("address", "address %q: want host:port", b.Address)
	}
	if b.TLS == "" {
		b.TLS = TLSNone
	}
	switch b.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return berr("tls", "tls %q: want none, starttls or implicit", b.TLS)
	}
	if b.ServerName == "" {
		b.ServerName = host
	}
	if b.Timeout.Duration == 0 {
		b.Timeout.Duration = DefaultBackendTimeout
	}
	if b.Timeout.Duration < 0 {
		return berr("timeout", "timeout must be positive")
	}
	if b.MasterUser == "" {
		return berr("master_user", "master_user is required")
	}
	if err := finishForward(proto, b); err != nil {
		return berr("forward_client_ip", "%v", err)
	}
	switch {
	case b.MasterPassword != "" && b.MasterPasswordFile != "":
		return berr("master_password_file", "set master_password or master_password_file, not both")
	case b.MasterPasswordFile != "":
		b.MasterPasswordFile = c.resolve(b.MasterPasswordFile)
		pw, err := os.ReadFile(b.MasterPasswordFile)
		if err != nil {
			return berr("master_password_file", "master_password_file: %v", err)
		}
		b.MasterPassword = strings.TrimRight(string(pw), "\r\n")
		if b.MasterPassword == "" {
			return berr("master_password_file", "master_password_file %s is empty", b.MasterPasswordFile)
		}
	case b.MasterPassword == "":
		return berr("master_password", "master_password or master_password_file is required")
	}
	b.CAFile = c.resolve(b.CAFile)
	return nil
}

// parsePrefix accepts a CIDR prefix ("10.0.0.0/8") or a single address.
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
