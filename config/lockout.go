package config

// Lockout is the [lockout] section. Every key may be left out: zero means
// lockout.DefaultOptions, whose doc comments (lockout/options.go) explain
// each knob; the defaults are repeated here. Changes take effect at the
// next restart, not on reload. Locks refuse and tarpit wrong secrets only:
// a 2FA account's right app passcode (75 random bits, nothing to guess)
// logs in under any lock, with the same failure reply for everything
// else, so nobody can lock the real user out; password accounts
// (passthrough) stay under every lock. Addresses in trusted_networks (the
// campus, often one NAT address) are exempt from the IP and prefix
// scopes: one bad client there cannot lock out everyone behind it; the
// account and account+IP scopes still apply.
type Lockout struct {
	// AccountIPThreshold locks an (account, client IP) pair after this
	// many failures within AccountIPWindow, even for a known-good IP.
	// Default 10.
	AccountIPThreshold int `toml:"account_ip_threshold"`
	// AccountIPWindow: default 15m.
	AccountIPWindow Duration `toml:"account_ip_window"`
	// AccountThreshold locks an account, for IPs not known-good for it,
	// after this many failures within AccountWindow. Default 50.
	AccountThreshold int `toml:"account_threshold"`
	// AccountWindow: default 1h.
	AccountWindow Duration `toml:"account_window"`
	// IPThreshold locks a client IP (password spraying) after this many
	// failures within IPWindow. Default 30.
	IPThreshold int `toml:"ip_threshold"`
	// IPWindow: default 15m.
	IPWindow Duration `toml:"ip_window"`
	// PrefixThreshold locks an IP prefix after this many failures within
	// PrefixWindow. Default 100.
	PrefixThreshold int `toml:"prefix_threshold"`
	// PrefixWindow: default 15m.
	PrefixWindow Duration `toml:"prefix_window"`
	// PrefixV4Bits and PrefixV6Bits size the prefixes counted together.
	// Defaults 24 and 64.
	PrefixV4Bits int `toml:"prefix_v4_bits"`
	PrefixV6Bits int `toml:"prefix_v6_bits"`
	// MaxAccountFailures locks an account after this many failures since
	// its last success, whatever the windows say; at most 100 (NIST SP
	// 800-63B). Default 100.
	MaxAccountFailures int `toml:"max_account_failures"`
	// FailureMemory: how long that count is kept. Default 720h.
	FailureMemory Duration `toml:"failure_memory"`
	// LockMin is the first lock's length, doubling per further lock up to
	// LockMax. Defaults 1m and 1h.
	LockMin Duration `toml:"lock_min"`
	LockMax Duration `toml:"lock_max"`
	// LockMemory: how long a lock's length is remembered for doubling.
	// Default 24h.
	LockMemory Duration `toml:"lock_memory"`
	// Fingerprints is how many distinct wrong secrets are remembered per
	// account (keyed HMACs, never the secret). Default 8.
	Fingerprints int `toml:"fingerprints"`
	// FingerprintTTL: how long a remembered wrong secret is refused
	// without asking the backend. Default 1h.
	FingerprintTTL Duration `toml:"fingerprint_ttl"`
	// RecheckInterval: how often a remembered wrong secret is let through
	// to the backend again, in case the password was reset. Default 5m.
	RecheckInterval Duration `toml:"recheck_interval"`
	// KnownGoodTTL: how long after a successful login an IP stays
	// known-good for the account. Default 720h (30 days).
	KnownGoodTTL Duration `toml:"known_good_ttl"`
	// Tarpit is the delay before a connection's first failed login is
	// answered, doubling per failure up to TarpitMax. Keep it at least as
	// long as the backend's own failure delay (Dovecot's
	// auth_failure_delay, 2s by default), so a lock cannot be told from a
	// wrong password by timing. Defaults 1s and 8s.
	Tarpit    Duration `toml:"tarpit"`
	TarpitMax Duration `toml:"tarpit_max"`
	// BatchDelay: how long changes gather before one database write; a
	// crash loses at most this much. At most 100ms. Default 100ms.
	BatchDelay Duration `toml:"batch_delay"`
	// MaxEntries bounds each in-memory table. Default 1048576.
	MaxEntries int `toml:"max_entries"`
}
