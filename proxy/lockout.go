package proxy

import (
	"path/filepath"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/lockout"
)

// LockoutDBName is the lockout database's file name in state_dir.
const LockoutDBName = "kanmon.db"

// LockoutOptions maps the [lockout] section onto lockout.Options; zero
// values keep lockout's defaults.
func LockoutOptions(c config.Lockout) lockout.Options {
	return lockout.Options{
		AccountIPThreshold: c.AccountIPThreshold,
		AccountIPWindow:    c.AccountIPWindow.Duration,
		AccountThreshold:   c.AccountThreshold,
		AccountWindow:      c.AccountWindow.Duration,
		IPThreshold:        c.IPThreshold,
		IPWindow:           c.IPWindow.Duration,
		PrefixThreshold:    c.PrefixThreshold,
		PrefixWindow:       c.PrefixWindow.Duration,
		PrefixV4Bits:       c.PrefixV4Bits,
		PrefixV6Bits:       c.PrefixV6Bits,
		MaxAccountFailures: c.MaxAccountFailures,
		FailureMemory:      c.FailureMemory.Duration,
		LockMin:            c.LockMin.Duration,
		LockMax:            c.LockMax.Duration,
		LockMemory:         c.LockMemory.Duration,
		Fingerprints:       c.Fingerprints,
		FingerprintTTL:     c.FingerprintTTL.Duration,
		RecheckInterval:    c.RecheckInterval.Duration,
		KnownGoodTTL:       c.KnownGoodTTL.Duration,
		Tarpit:             c.Tarpit.Duration,
		TarpitMax:          c.TarpitMax.Duration,
		BatchDelay:         c.BatchDelay.Duration,
		MaxEntries:         c.MaxEntries,
	}
}

// OpenLockout opens the lockout database in rt's state_dir, keyed with the
// passcode pepper (so fingerprints are useless without it).
func OpenLockout(rt *Generation) (*lockout.Guard, error) {
	return lockout.Open(filepath.Join(rt.Config.StateDir, LockoutDBName), rt.Pepper, LockoutOptions(rt.Config.Lockout))
}
