// Package config loads and validates kanmon's TOML configuration file.
//
// The file format is a contract with the admins: the example config in
// testdata/kanmon.example.toml keeps working verbatim, and every key is
// documented on the struct fields below, with its default (docs/config.md
// is generated from them). Relative paths are resolved against
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

// Ways of forwarding the client's address to a backend, accepted in
// [backend.X] forward_client_ip.
const (
	ForwardNone    = "none"    // send nothing
	ForwardID      = "id"      // IMAP ID x-originating-ip (imap only)
	ForwardXCLIENT = "xclient" // XCLIENT ADDR= PORT= (pop3, submission)
	ForwardPROXY   = "proxy"   // a PROXY protocol v2 header (any protocol)
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
	// DefaultMaxConnections caps the client connections open at once.
	DefaultMaxConnections = 10000
	// DefaultMaxPreAuthPerIP caps one client address's connections that
	// have not logged in yet.
	DefaultMaxPreAuthPerIP = 20
	// DefaultMaxSessionsPerUserIP caps one user's logged-in sessions from
	// one client address, per protocol: Dovecot's default for
	// mail_max_userip_connections.
	DefaultMaxSessionsPerUserIP = 10
	// DefaultDrainTimeout is how long logged-in sessions may go on after
	// SIGTERM.
	DefaultDrainTimeout = 10 * time.Second
	// DefaultPreAuthLifetime bounds a connection's whole time before
	// login, whatever it sends (Dovecot gives up after about 3 minutes).
	DefaultPreAuthLifetime = 3 * time.Minute
	// DefaultMaxPreAuthPerPrefix caps the connections not logged in yet
	// from one /24 or /64 outside trusted_networks.
	DefaultMaxPreAuthPerPrefix = 100
	// DefaultPreAuthPrefixV4Bits and DefaultPreAuthPrefixV6Bits are the
	// prefixes max_preauth_per_prefix counts by.
	DefaultPreAuthPrefixV4Bits, DefaultPreAuthPrefixV6Bits = 24, 64
	// DefaultReservedConnectionsPercent is the share of max_connections
	// kept for known-good and campus addresses.
	DefaultReservedConnectionsPercent = 10
	// DefaultStressThresholdPercent is the share of max_connections held
	// by connections not logged in yet above which stress mode starts.
	DefaultStressThresholdPercent = 75
	// DefaultStressPreAuthTimeout and DefaultStressPreAuthLifetime are
	// preauth_timeout and preauth_lifetime in stress mode.
	DefaultStressPreAuthTimeout  = 10 * time.Second
	DefaultStressPreAuthLifetime = 30 * time.Second
)

// Log formats accepted in log_format.
const (
	LogFormatText = "text" // log/slog's TextHandler: key=value pairs
	LogFormatJSON = "json" // log/slog's JSONHandler: one object per line
)

// Config is a loaded, validated configuration. Paths are absolute.
type Config struct {
	// File is the absolute path of the file this was loaded from.
	File string `toml:"-"`

	// StateDir holds kanmon.db (lockout state) and the passcode pepper.
	// Default "state", relative to the config file.
	StateDir string `toml:"state_dir"`
	// Accounts is the TOML file listing 2FA accounts and passcode hashes,
	// or, for several nodes, a PostgreSQL URL
	// ("postgres://kanmon@db.example.edu:5432/kanmon?sslmode=verify-full&passfile=pgpass",
	// docs/cluster.md): the database holds the same accounts, and every
	// change reaches every node's sessions without a reload. A password
	// in the URL is refused; use passfile (relative to the config file).
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
	// IdleTimeout is the idle timeout after login, e.g. "31m"; at least
	// 30m (RFC 9051 §5.4, RFC 2177). Default 31m.
	IdleTimeout Duration `toml:"idle_timeout"`
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string `toml:"log_level"`
	// LogFormat is text (key=value pairs, as log/slog's TextHandler
	// writes them) or json (one JSON object per line). The fail2ban
	// filter in contrib/fail2ban matches the text format. Default text.
	// Takes effect at the next restart, not on reload.
	LogFormat string `toml:"log_format"`
	// MetricsAddress is host:port of the Prometheus metrics listener,
	// which serves /metrics over plain HTTP; keep it on loopback or a
	// management network. Default: empty, no metrics listener. Takes
	// effect at the next restart, not on reload.
	MetricsAddress string `toml:"metrics_address"`
	// MaxConnections caps the client connections open at once, all
	// listeners together, logged in or not. One more is told so before
	// the greeting (IMAP "* BYE [UNAVAILABLE]", POP3 "-ERR [SYS/TEMP]",
	// SMTP "421 4.7.0") and closed; on an implicit-TLS listener that
	// takes a TLS handshake, bounded by 2s. Default 10000.
	MaxConnections int `toml:"max_connections"`
	// MaxPreAuthPerIP caps the connections one client address may hold
	// open before they log in; one more is refused as for
	// MaxConnections. A webmail server, or any gateway that logs many
	// users in at once from one address, may need more. Default 20.
	MaxPreAuthPerIP int `toml:"max_preauth_per_ip"`
	// MaxSessionsPerUserIP caps one user's logged-in sessions from one
	// client address, per protocol, as Dovecot's
	// mail_max_userip_connections does (whose default it shares). A login
	// over it is refused after the credentials were checked (IMAP
	// "NO [LIMIT]", POP3 "-ERR [IN-USE]", SMTP "454 4.7.0"). Default 10.
	MaxSessionsPerUserIP int `toml:"max_sessions_per_user_ip"`
	// DrainTimeout is how long, after SIGTERM, logged-in sessions may go
	// on before they are closed (an IMAP client first gets "* BYE Server
	// shutting down."). Sessions not logged in are closed at once.
	// Default 10s.
	DrainTimeout Duration `toml:"drain_timeout"`
	// PreAuthLifetime bounds a connection's whole time before login,
	// however often it sends a command; at least preauth_timeout.
	// Default 3m.
	PreAuthLifetime Duration `toml:"preauth_lifetime"`
	// MaxPreAuthPerPrefix caps the connections not logged in yet from
	// one network prefix (preauth_prefix_v4_bits, preauth_prefix_v6_bits)
	// outside trusted_networks, so that a pool of addresses cannot fill
	// max_connections. Refused as for max_connections. Default 100.
	MaxPreAuthPerPrefix int `toml:"max_preauth_per_prefix"`
	// PreAuthPrefixV4Bits is the IPv4 prefix max_preauth_per_prefix
	// counts by. Default 24.
	PreAuthPrefixV4Bits int `toml:"preauth_prefix_v4_bits"`
	// PreAuthPrefixV6Bits is the IPv6 prefix max_preauth_per_prefix
	// counts by. Default 64.
	PreAuthPrefixV6Bits int `toml:"preauth_prefix_v6_bits"`
	// ReservedConnections is how many of max_connections only addresses
	// known-good for some account (one logged in from it within the
	// lockout's known_good_ttl) or inside trusted_networks may use, once
	// other addresses have filled the rest. 0 keeps no reserve; less
	// than max_connections. Default: 10% of max_connections.
	ReservedConnections *int `toml:"reserved_connections"`
	// StressThresholdPercent starts stress mode when connections not
	// logged in yet hold this share of max_connections (1 to 100): then
	// preauth_timeout and preauth_lifetime shorten to the stress values,
	// for connections already open too. Logged once on entry and once on
	// exit; the kanmon_stress_mode gauge is 1 meanwhile. Default 75.
	StressThresholdPercent int `toml:"stress_threshold_percent"`
	// StressPreAuthTimeout is preauth_timeout in stress mode; at most
	// preauth_timeout. Default 10s.
	StressPreAuthTimeout Duration `toml:"stress_preauth_timeout"`
	// StressPreAuthLifetime is preauth_lifetime in stress mode; at most
	// preauth_lifetime. Default 30s.
	StressPreAuthLifetime Duration `toml:"stress_preauth_lifetime"`
	// ProxyTrustedNetworks are the CIDR prefixes (load balancers) allowed
	// to send a PROXY protocol header on a listener with proxy_protocol =
	// true; a connection from anywhere else to such a listener is refused.
	// Required when any listener has proxy_protocol. Default: none.
	ProxyTrustedNetworks []string `toml:"proxy_trusted_networks"`
	// IDTrustedNetworks are the CIDR prefixes (a webmail such as Roundcube)
	// whose IMAP ID "x-originating-ip" and "x-originating-port", sent
	// before login, replace the client address for trusted_networks,
	// lockout, logs and last use. From other hosts those fields are only
	// logged. Default: none.
	IDTrustedNetworks []string `toml:"id_trusted_networks"`

	// TLS is the certificate served on implicit and STARTTLS listeners.
	TLS TLS `toml:"tls"`
	// Listeners are the client-facing sockets; at least one.
	Listeners []Listener `toml:"listener"`
	// Backend holds one backend per protocol that has a listener.
	Backend Backends `toml:"backend"`
	// Users folds the spellings of a user name to one account; see
	// Users.
	Users Users `toml:"users"`
	// Lockout tunes the failed-login counters; see Lockout.
	Lockout Lockout `toml:"lockout"`
	// Portal turns on the self-service 2FA web portal; see Portal.
	// Default: none, no portal.
	Portal *Portal `toml:"portal"`
	// Redis shares the short-lived security state of several kanmon
	// nodes; see Redis. Default: none, one node (bbolt and memory).
	Redis *Redis `toml:"redis"`

	// AccountsURL is Accounts when it is a PostgreSQL URL, with its
	// passfile made absolute; empty for an accounts file.
	AccountsURL string `toml:"-"`
	// TrustedPrefixes is TrustedNetworks parsed.
	TrustedPrefixes []netip.Prefix `toml:"-"`
	// ProxyTrustedPrefixes is ProxyTrustedNetworks parsed.
	ProxyTrustedPrefixes []netip.Prefix `toml:"-"`
	// IDTrustedPrefixes is IDTrustedNetworks parsed.
	IDTrustedPrefixes []netip.Prefix `toml:"-"`

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
	// ProxyProtocol requires a PROXY protocol v1 or v2 header (HAProxy, a
	// load balancer) at the start of every connection, read before TLS;
	// its source address is the client's. Only hosts in
	// proxy_trusted_networks may connect; a connection without a valid
	// header is refused. Default false.
	ProxyProtocol bool `toml:"proxy_protocol"`

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
	// ForwardClientIP tells the backend the real client address: "id"
	// sends IMAP ID x-originating-ip/-port before login (imap only;
	// Dovecot's login_trusted_networks, Zimbra), "xclient" sends XCLIENT
	// ADDR/PORT before login (pop3 and submission; Dovecot, Postfix),
	// "proxy" writes a PROXY protocol v2 header first (any protocol;
	// Dovecot's haproxy listeners) and "none" sends nothing. Default none.
	ForwardClientIP string `toml:"forward_client_ip"`
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
