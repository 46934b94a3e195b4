package lockout

import (
	"errors"
	"fmt"
	"time"
)

// NISTMaxAccountFailures is the most counted failures an account may see
// without a lock: NIST SP 800-63B (rev. 3 §5.2.2, rev. 4 §3.2.2) limits
// consecutive failed authentication attempts on one account to no more
// than 100.
const NISTMaxAccountFailures = 100

// MaxBatchDelay is the largest accepted Options.BatchDelay: the issue
// promises that a crash loses at most the last 100 ms of state.
const MaxBatchDelay = 100 * time.Millisecond

// sweepInterval is how often expired entries are dropped from memory and
// from the database.
const sweepInterval = time.Minute

// Options tunes a Guard. Each field names, after "toml:", the key it is
// meant to have in the [lockout] config section. A zero field takes the
// default given in its comment (see DefaultOptions); a negative one is an
// error.
//
// Counting: every counted failure is added to four counters, one per
// scope: the (account, client IP) pair, the account, the client IP, and
// the IP prefix (/24 for IPv4, /64 for IPv6). A counter that reaches its
// threshold within its window locks its scope. The window is sliding,
// approximated with two fixed buckets (the previous bucket weighted by how
// much of it the sliding window still covers), as nginx and Cloudflare do.
// The windowed count is not reset by a lock, so once a lock ends the next
// failure in the window locks again, for twice as long.
type Options struct {
	// AccountIPThreshold locks an (account, IP) pair after this many
	// failures within AccountIPWindow. This lock applies even to
	// known-good IPs. toml: account_ip_threshold. Default 10.
	AccountIPThreshold int
	// AccountIPWindow: toml: account_ip_window. Default 15m.
	AccountIPWindow time.Duration
	// AccountThreshold locks an account, for IPs that are not known-good
	// for it, after this many failures within AccountWindow from any
	// IPs. toml: account_threshold. Default 50.
	AccountThreshold int
	// AccountWindow: toml: account_window. Default 1h.
	AccountWindow time.Duration
	// IPThreshold locks a client IP, for accounts it is not known-good
	// for, after this many failures within IPWindow on any accounts
	// (password spraying). toml: ip_threshold. Default 30.
	IPThreshold int
	// IPWindow: toml: ip_window. Default 15m.
	IPWindow time.Duration
	// PrefixThreshold locks an IP prefix, for accounts its IPs are not
	// known-good for, after this many failures within PrefixWindow from
	// any of its addresses. toml: prefix_threshold. Default 100.
	PrefixThreshold int
	// PrefixWindow: toml: prefix_window. Default 15m.
	PrefixWindow time.Duration
	// PrefixV4Bits is the IPv4 prefix length counted together.
	// toml: prefix_v4_bits. Default 24.
	PrefixV4Bits int
	// PrefixV6Bits is the IPv6 prefix length counted together.
	// toml: prefix_v6_bits. Default 64.
	PrefixV6Bits int
	// MaxAccountFailures locks an account (for IPs not known-good for it)
	// once it has this many counted failures since its last successful
	// login, whatever the windows say; at most NISTMaxAccountFailures.
	// toml: max_account_failures. Default 100.
	MaxAccountFailures int
	// FailureMemory is how long an account's failures-since-success count
	// (MaxAccountFailures) is kept after its last counted failure.
	// toml: failure_memory. Default 720h (30 days).
	FailureMemory time.Duration

	// LockMin is the first lock's length; each further lock of the same
	// scope doubles it. toml: lock_min. Default 1m.
	LockMin time.Duration
	// LockMax caps a lock's length. toml: lock_max. Default 1h.
	LockMax time.Duration
	// LockMemory is how long after a lock ends its length is remembered
	// for doubling; after that the next lock is LockMin again.
	// toml: lock_memory. Default 24h.
	LockMemory time.Duration

	// Fingerprints is how many distinct wrong secrets are remembered per
	// account (as keyed HMAC-SHA256 fingerprints, never the secret);
	// the least recently confirmed one is forgotten first.
	// toml: fingerprints. Default 8.
	Fingerprints int
	// FingerprintTTL is how long a fingerprint is trusted after the
	// backend (or the 2FA policy) last confirmed its secret wrong.
	// toml: fingerprint_ttl. Default 1h.
	FingerprintTTL time.Duration
	// RecheckInterval is how often a remembered wrong secret is let
	// through to the backend again, in case the password was reset.
	// Keep it above the backend's own lockout rate: Zimbra's default locks
	// after 10 failures an hour, which a 5m recheck stays under only with
	// its identical-password suppression. toml: recheck_interval.
	// Default 5m.
	RecheckInterval time.Duration
	// KnownGoodTTL is how long after a successful login an IP stays
	// known-good for that account, exempt from the account, IP and
	// prefix locks. toml: known_good_ttl. Default 720h (30 days).
	KnownGoodTTL time.Duration

	// Tarpit is the delay before the first failed login on a connection
	// is answered; it doubles for each further one. toml: tarpit.
	// Default 1s.
	Tarpit time.Duration
	// TarpitMax caps the tarpit delay. toml: tarpit_max. Default 8s.
	TarpitMax time.Duration

	// BatchDelay is how long changes are gathered before they are written
	// to the database in one transaction. A crash (kill -9, power loss)
	// loses at most the changes of the last BatchDelay plus the write in
	// flight. At most MaxBatchDelay. toml: batch_delay. Default 100ms.
	BatchDelay time.Duration
	// MaxEntries bounds each in-memory table (the four counter scopes,
	// fingerprints, known-good IPs) and so the database. When a table is
	// full, a new entry replaces an expired one or the least recently
	// used of a small random sample. An entry costs roughly 150 bytes
	// (fingerprints 8×32 more), so the default allows some 1 GB in the
	// worst case of a storm from a million addresses on a million
	// accounts. toml: max_entries. Default 1048576.
	MaxEntries int

	// Now is the clock; tests inject one. Default time.Now.
	Now func() time.Time
}

// DefaultOptions returns the documented defaults.
func DefaultOptions() Options {
	return Options{
		AccountIPThreshold: 10,
		AccountIPWindow:    15 * time.Minute,
		AccountThreshold:   50,
		AccountWindow:      time.Hour,
		IPThreshold:        30,
		IPWindow:           15 * time.Minute,
		PrefixThreshold:    100,
		PrefixWindow:       15 * time.Minute,
		PrefixV4Bits:       24,
		PrefixV6Bits:       64,
		MaxAccountFailures: NISTMaxAccountFailures,
		FailureMemory:      30 * 24 * time.Hour,
		LockMin:            time.Minute,
		LockMax:            time.Hour,
		LockMemory:         24 * time.Hour,
		Fingerprints:       8,
		FingerprintTTL:     time.Hour,
		RecheckInterval:    5 * time.Minute,
		KnownGoodTTL:       30 * 24 * time.Hour,
		Tarpit:             time.Second,
		TarpitMax:          8 * time.Second,
		BatchDelay:         MaxBatchDelay,
		MaxEntries:         1 << 20,
		Now:                time.Now,
	}
}

// withDefaults fills zero fields from DefaultOptions and checks the rest.
func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	var errs []error
	ints := []struct {
		name   string
		v, def *int
		max    int
	}{
		{"account_ip_threshold", &o.AccountIPThreshold, &d.AccountIPThreshold, 0},
		{"account_threshold", &o.AccountThreshold, &d.AccountThreshold, 0},
		{"ip_threshold", &o.IPThreshold, &d.IPThreshold, 0},
		{"prefix_threshold", &o.PrefixThreshold, &d.PrefixThreshold, 0},
		{"prefix_v4_bits", &o.PrefixV4Bits, &d.PrefixV4Bits, 32},
		{"prefix_v6_bits", &o.PrefixV6Bits, &d.PrefixV6Bits, 128},
		{"max_account_failures", &o.MaxAccountFailures, &d.MaxAccountFailures, NISTMaxAccountFailures},
		{"fingerprints", &o.Fingerprints, &d.Fingerprints, 255},
		{"max_entries", &o.MaxEntries, &d.MaxEntries, 0},
	}
	for _, f := range ints {
		switch {
		case *f.v == 0:
			*f.v = *f.def
		case *f.v < 0:
			errs = append(errs, fmt.Errorf("%s: %d is negative", f.name, *f.v))
		case f.max > 0 && *f.v > f.max:
			errs = append(errs, fmt.Errorf("%s: %d is more than %d", f.name, *f.v, f.max))
		}
	}
	durs := []struct {
		name   string
		v, def *time.Duration
	}{
		{"account_ip_window", &o.AccountIPWindow, &d.AccountIPWindow},
		{"account_window", &o.AccountWindow, &d.AccountWindow},
		{"ip_window", &o.IPWindow, &d.IPWindow},
		{"prefix_window", &o.PrefixWindow, &d.PrefixWindow},
		{"failure_memory", &o.FailureMemory, &d.FailureMemory},
		{"lock_min", &o.LockMin, &d.LockMin},
		{"lock_max", &o.LockMax, &d.LockMax},
		{"lock_memory", &o.LockMemory, &d.LockMemory},
		{"fingerprint_ttl", &o.FingerprintTTL, &d.FingerprintTTL},
		{"recheck_interval", &o.RecheckInterval, &d.RecheckInterval},
		{"known_good_ttl", &o.KnownGoodTTL, &d.KnownGoodTTL},
		{"tarpit", &o.Tarpit, &d.Tarpit},
		{"tarpit_max", &o.TarpitMax, &d.TarpitMax},
		{"batch_delay", &o.BatchDelay, &d.BatchDelay},
	}
	for _, f := range durs {
		switch {
		case *f.v == 0:
			*f.v = *f.def
		case *f.v < 0:
			errs = append(errs, fmt.Errorf("%s: %v is negative", f.name, *f.v))
		}
	}
	if o.LockMax < o.LockMin {
		errs = append(errs, fmt.Errorf("lock_max %v is less than lock_min %v", o.LockMax, o.LockMin))
	}
	if o.TarpitMax < o.Tarpit {
		errs = append(errs, fmt.Errorf("tarpit_max %v is less than tarpit %v", o.TarpitMax, o.Tarpit))
	}
	if o.BatchDelay > MaxBatchDelay {
		errs = append(errs, fmt.Errorf("batch_delay %v is more than %v", o.BatchDelay, MaxBatchDelay))
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("lockout options: %w", err)
	}
	return o, nil
}
