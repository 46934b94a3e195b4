// Package config loads and validates kanmon's TOML configuration file.
//
// The file format is the contract of DESIGN.md: every key documented on the
// struct fields below, with its default. Relative paths are resolved against
// the directory of the config file. An unknown key or a bad value is an error
// that names the file and line ("kanmon.toml:12: ..."); Config.Line finds
// the line of any key after loading.
package config

import (
	"net/netip"
	"time"
)

// Protocol names accepted in [[listener]] protocol and as [backend.X] keys.
const (
	ProtocolIMAP       = "imap"
	ProtocolPOP3       = "pop3"
	ProtocolSubmission = "submission"
)

// TLS modes accepted by listeners and backends.
const (
	TLSImplicit = "implicit" // TLS from the first byte (993, 995, 465)
	TLSStartTLS = "starttls" // plaintext greeting, then STARTTLS/STLS (143, 110, 587)
	TLSNone     = "none"     // plaintext only; for loopback or a trusted LB
)

// Defaults for keys that may be left out.
const (
	// DefaultPreAuthTimeout is how long a client may sit idle before it
	// authenticates. RFC 9051 §5.4 asks for at least 30 minutes once
	// authenticated, but says nothing of pre-auth; 60 s is Dovecot's habit.
	DefaultPreAuthTimeout = 60 * time.Second
	// DefaultIdleTimeout is the post-auth idle timeout. RFC 2177 (IDLE)
	// clients re-issue IDLE every 29 minutes, so it must exceed that.
	DefaultIdleTimeout = 31 * time.Minute
	// MinIdleTimeout is the smallest post-auth idle timeout accepted
	// (RFC 9051 §5.4: an autologout timer of at least 30 minutes).
	MinIdleTimeout = 30 * time.Minute
	// DefaultBackendTimeout bounds dialing and logging into the backend.
	DefaultBackendTimeout = 15 * time.Second
)

// Config is a loaded, validated configuration. Paths are absolute.
type Config struct {
	// File is the absolute path of the file this was loaded from.
	File string `toml:"-"`

	// StateDir holds kanmon.db (lockout state) and the passcode pepper.
	// Default "state", relative to the config file.
	StateDir string `toml:"state_dir"`
	// Accounts is the TOML file listing 2FA accounts and passcode hashes.
	// Default "accounts.toml", relative to the config file.
	Accounts string `toml:"accounts"`
	// TrustedNetworks are CIDR prefixes (the campus) from which accounts
	// without 2FA may log in with their password. Default: none.
	TrustedNetworks []string `toml:"trusted_networks"`
	// Require2FAOutside refuses accounts without 2FA outside
	// TrustedNetworks. Default true.
	Require2FAOutside *bool `toml:"require_2fa_outside"`
	// PreAuthTimeout is the idle timeout before login, e.g. "60s".
	// Default 60s.
	PreAuthTimeout Duration `toml:"preauth_timeout"`
	// IdleTimeout is the idle timeout after login, e.g. "31m". Default
	// 31m; at least 30m (RFC 9051 §5.4, RFC 2177).
	IdleTimeout Duration `toml:"idle_timeout"`
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string `toml:"log_level"`

	// TLS is the certificate served on implicit and STARTTLS listeners.
	TLS TLS `toml:"tls"`
	// Listeners are the client-facing sockets; at least one.
	Listeners []Listener `toml:"listener"`
	// Backend holds one backend per protocol that has a listener.
	Backend Backends `toml:"backend"`
	// Lockout tunes the failed-login counters; see Lockout.
	Lockout Lockout `toml:"lockout"`

	// TrustedPrefixes is TrustedNetworks parsed.
	TrustedPrefixes []netip.Prefix `toml:"-"`

	// keys locates every key of the file, for Line and error messages.
	keys keyIndex
}

// TLS names the PEM certificate chain and key. Required when any listener
// uses implicit or starttls.
type TLS struct {
	// Cert is the PEM certificate chain file, relative to the config file.
	Cert string `toml:"cert"`
	// Key is the PEM private key file, relative to the config file.
	Key string `toml:"key"`
}

// Listener is one client-facing socket.
type Listener struct {
	// Protocol is imap, pop3 or submission. Required.
	Protocol string `toml:"protocol"`
	// Address is host:port to listen on. Required.
	Address string `toml:"address"`
	// TLS is implicit, starttls or none. Default implicit.
	TLS string `toml:"tls"`

	// Line is where this listener's [[listener]] header (or its element of
	// an inline array) is in the file; set by Load and Parse.
	Line int `toml:"-"`
}

// Backends holds the mail server for each protocol.
type Backends struct {
	// IMAP is required when an imap listener exists.
	IMAP *Backend `toml:"imap"`
	// POP3 is required when a pop3 listener exists.
	POP3 *Backend `toml:"pop3"`
	// Submission is required when a submission listener exists.
	Submission *Backend `toml:"submission"`
}

// For returns the backend for protocol, or nil.
func (b Backends) For(protocol string) *Backend {
	switch protocol {
	case ProtocolIMAP:
		return b.IMAP
	case ProtocolPOP3:
		return b.POP3
	case ProtocolSubmission:
		return b.Submission
	}
	return nil
}

// Backend is the real mail server behind kanmon for one protocol.
type Backend struct {
	// Address is host:port of the mail server. Required.
	Address string `toml:"address"`
	// TLS is none, starttls or implicit. Default none.
	TLS string `toml:"tls"`
	// ServerName is the name checked in the backend's certificate.
	// Default: the host part of Address.
	ServerName string `toml:"server_name"`
	// CAFile is a PEM bundle trusted for the backend's certificate.
	// Default: the system roots.
	CAFile string `toml:"ca_file"`
	// InsecureSkipVerify turns off certificate checks; logged as a warning
	// at start. Default false.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`
	// MasterUser is the authcid kanmon uses (SASL PLAIN with authzid = the
	// user) for passcode logins. Required.
	MasterUser string `toml:"master_user"`
	// MasterPassword is the master user's password. Exactly one of this or
	// MasterPasswordFile is required. After Load it holds the password
	// whichever way it was given.
	MasterPassword string `toml:"master_password"`
	// MasterPasswordFile is a file holding the master password, relative
	// to the config file; trailing newlines are trimmed and an empty file
	// is an error. After Load the path is absolute.
	MasterPasswordFile string `toml:"master_password_file"`
	// Timeout bounds dial, TLS and login at the backend. Default 15s.
	Timeout Duration `toml:"timeout"`
}

// Duration is a time.Duration written as a Go duration string ("60s").
type Duration struct{ time.Duration }

// UnmarshalText parses "90s", "31m", "1h".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration as Go does ("1m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }
