package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/otp"
)

// MaxAuthenticators is how many authenticators an account may hold: a
// phone, a spare, a desktop app, with room for a change of phones.
const MaxAuthenticators = 5

// LegacyAuthenticatorName names the authenticator of an account written
// before accounts could hold several (its "totp" and "totp_enrolled"
// keys): it keeps working under this name, with no migration step.
const LegacyAuthenticatorName = "Authenticator"

// authenticatorIDPrefix sets the last-use records of authenticators
// apart from those of passcodes, in the same store.
const authenticatorIDPrefix = "totp-"

// Errors of AddAuthenticator and RemoveAuthenticator; the portal and the
// CLI branch on them.
var (
	// ErrTooManyAuthenticators: the account holds MaxAuthenticators.
	ErrTooManyAuthenticators = fmt.Errorf("an account holds at most %d authenticators", MaxAuthenticators)
	// ErrAuthenticatorName: the name is used by another authenticator of
	// the account.
	ErrAuthenticatorName = errors.New("another authenticator has that name")
	// ErrNoAuthenticator: the account has no authenticator of that name
	// (or none at all).
	ErrNoAuthenticator = errors.New("no authenticator of that name")
	// ErrLastAuthenticator: removing it would leave none; turning 2FA
	// off is the way.
	ErrLastAuthenticator = errors.New("this is the only authenticator: turn two-factor authentication off instead")
)

// Authenticator is one registered authenticator app: an
// [[account.authenticator]] table of the accounts file.
type Authenticator struct {
	// Name is the user's name for it ("iPhone"), unique per account,
	// case-insensitively.
	Name string `toml:"name"`
	// TOTP is its secret, sealed with the state directory's totp.key
	// (sealTOTP): "aes-256-gcm$nonce$ciphertext".
	TOTP string `toml:"totp"`
	// Added is when it was registered.
	Added time.Time `toml:"added"`
}

// ID is a short, stable, non-secret identifier of this very
// authenticator (derived from its sealed secret): its last use is kept
// under it, beside the passcodes'.
func (au *Authenticator) ID() string { return authenticatorIDPrefix + passcodeID(au.TOTP) }

// AllAuthenticators returns the account's authenticators: a legacy
// totp key first (as LegacyAuthenticatorName), then the tables.
func (a *Account) AllAuthenticators() []Authenticator {
	if a == nil {
		return nil
	}
	if a.TOTP == "" {
		return a.Authenticators
	}
	legacy := Authenticator{Name: LegacyAuthenticatorName, TOTP: a.TOTP, Added: a.TOTPEnrolled}
	return append([]Authenticator{legacy}, a.Authenticators...)
}

// Authenticator returns the account's authenticator called name, matched
// case-insensitively, or nil. A legacy totp key must have been moved into
// the tables first (Normalize; reading and Update do it).
func (a *Account) Authenticator(name string) *Authenticator {
	if a == nil {
		return nil
	}
	for i := range a.Authenticators {
		if strings.EqualFold(a.Authenticators[i].Name, name) {
			return &a.Authenticators[i]
		}
	}
	return nil
}

// normalize moves a legacy totp key into the authenticator tables, so a
// change writes the current layout.
func (a *Account) normalize() {
	if a.TOTP != "" {
		a.Authenticators = a.AllAuthenticators()
		a.TOTP, a.TOTPEnrolled = "", time.Time{}
	}
}

// Normalize moves every legacy totp key into the authenticator tables
// (see LegacyAuthenticatorName). Reading a file does it; so must a
// SharedAccounts that loads an account written by an older version.
func (a *Accounts) Normalize() {
	for i := range a.Accounts {
		a.Accounts[i].normalize()
	}
}

// ValidateAuthenticatorName checks an authenticator's name as an app
// name is checked.
func ValidateAuthenticatorName(name string) error {
	return validateName("authenticator name", name, MaxAppLen, true)
}

// validateAuthenticators checks an account's authenticators: at most
// MaxAuthenticators, names valid and unique, secrets well-formed, and
// each with when it was added. k is the index of the bad table, -1 for
// the account's own keys.
func (a *Account) validateAuthenticators() (k int, key string, err error) {
	all := a.AllAuthenticators()
	if len(all) > MaxAuthenticators {
		return -1, "user", fmt.Errorf("%d authenticators; %w", len(all), ErrTooManyAuthenticators)
	}
	offset := len(all) - len(a.Authenticators) // 1 with a legacy totp key
	names := map[string]bool{}
	for i, au := range all {
		k := i - offset
		if err := ValidateAuthenticatorName(au.Name); err != nil {
			return k, "name", err
		}
		if names[foldKey(au.Name)] {
			return k, "name", fmt.Errorf("authenticator %q: the name is used twice", au.Name)
		}
		names[foldKey(au.Name)] = true
		if _, _, err := parseSealed(au.TOTP); err != nil {
			return k, "totp", fmt.Errorf("authenticator %q: malformed totp: %w", au.Name, err)
		}
		if au.Added.IsZero() {
			return k, "added", fmt.Errorf("authenticator %q: added (when it was registered) is required", au.Name)
		}
	}
	return 0, "", nil
}

// AddAuthenticator registers one more authenticator, called name, for
// user, whose 2FA is on with at least one already: secret, which the user
// has just proved to hold by typing a correct code, is sealed into the
// accounts. The caller has checked a code from another authenticator,
// or a one-time code: the rule that guards adding one.
func AddAuthenticator(s *Store, stateDir, user, name string, secret []byte) error {
	if err := ValidateAuthenticatorName(name); err != nil {
		return err
	}
	if len(secret) < otp.SecretSize || len(secret) > maxTOTPSecret {
		return fmt.Errorf("add authenticator: secret has %d bytes, want %d to %d", len(secret), otp.SecretSize, maxTOTPSecret)
	}
	user, err := s.Canonical(user)
	if err != nil {
		return err
	}
	return s.Update(func(a *Accounts) error {
		acct := a.Lookup(user)
		if !acct.HasTOTP() {
			return ErrNoAuthenticator
		}
		if len(acct.Authenticators) >= MaxAuthenticators {
			return ErrTooManyAuthenticators
		}
		if acct.Authenticator(name) != nil {
			return ErrAuthenticatorName
		}
		key, err := keyInUse(totpKeyFile(), stateDir, true)
		if err != nil {
			return err
		}
		sealed, err := sealTOTP(key, acct.User, secret)
		if err != nil {
			return err
		}
		acct.Authenticators = append(acct.Authenticators, Authenticator{Name: name, TOTP: sealed, Added: stamp()})
		return nil
	})
}

// RemoveAuthenticator removes user's authenticator called name and
// returns its name as written. The last one is not removed
// (ErrLastAuthenticator): that is turning 2FA off, DisableTwoFA. The
// caller has checked a code from another authenticator, or a one-time
// code.
func RemoveAuthenticator(s *Store, user, name string) (string, error) {
	user, err := s.Canonical(user)
	if err != nil {
		return "", err
	}
	var removed string
	err = s.Update(func(a *Accounts) error {
		acct := a.Lookup(user)
		au := acct.Authenticator(name)
		if au == nil {
			return ErrNoAuthenticator
		}
		if len(acct.Authenticators) == 1 {
			return ErrLastAuthenticator
		}
		removed = au.Name
		acct.Authenticators = slices.DeleteFunc(acct.Authenticators, func(x Authenticator) bool { return x.Name == removed })
		return nil
	})
	return removed, err
}
