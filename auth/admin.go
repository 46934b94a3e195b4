package auth

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The admin operations below are the only writers of the accounts file:
// the CLI, the demo and the tests all go through them, each one a single
// locked read-modify-write of the Store.

// stamp is the time written to the accounts file: UTC, whole seconds.
func stamp() time.Time { return time.Now().UTC().Truncate(time.Second) }

// EnableTwoFA turns 2FA on for user. added is false when it was already
// on (and nothing was written).
func EnableTwoFA(s *Store, user string) (added bool, err error) {
	if err := ValidateUser(user); err != nil {
		return false, err
	}
	if user, err = s.Canonical(user); err != nil {
		return false, err
	}
	err = s.Update(func(a *Accounts) error {
		if a.Lookup(user) != nil {
			return ErrNoChange
		}
		a.Accounts = append(a.Accounts, Account{User: user, Enabled: stamp()})
		added = true
		return nil
	})
	return added, err
}

// DisableTwoFA is the admin reset for a lost device: the account leaves
// the accounts file with all its passcodes. It returns the account's
// spelling in the file and how many passcodes went with it.
func DisableTwoFA(s *Store, user string) (name string, removed int, err error) {
	if user, err = s.Canonical(user); err != nil {
		return "", 0, err
	}
	err = s.Update(func(a *Accounts) error {
		i := slices.IndexFunc(a.Accounts, func(acct Account) bool { return strings.EqualFold(acct.User, user) })
		if i < 0 {
			return fmt.Errorf("%s does not have 2FA on", user)
		}
		name, removed = a.Accounts[i].User, len(a.Accounts[i].Passcodes)
		a.Accounts = slices.Delete(a.Accounts, i, i+1)
		return nil
	})
	return name, removed, err
}

// AddPasscode makes a new passcode for user's app and stores its hash. It
// returns the passcode, normalized (16 letters); it is never available
// again. The pepper is loaded (or created) from stateDir only once the
// account is known to have 2FA on.
func AddPasscode(s *Store, stateDir, user, app string) (string, error) {
	return AddScopedPasscode(s, stateDir, user, app, nil)
}

// AddScopedPasscode is AddPasscode for a passcode valid only on protocols
// (see AppPasscode.Protocols; empty means every protocol).
func AddScopedPasscode(s *Store, stateDir, user, app string, protocols []string) (string, error) {
	if err := ValidateApp(app); err != nil {
		return "", err
	}
	if err := ValidateProtocols(protocols); err != nil {
		return "", err
	}
	user, err := s.Canonical(user)
	if err != nil {
		return "", err
	}
	var code string
	err = s.Update(func(a *Accounts) error {
		acct := a.Lookup(user)
		if acct == nil {
			return fmt.Errorf("%s does not have 2FA on; run kanmon 2fa enable first", user)
		}
		if old := acct.Passcode(app); old != nil {
			return fmt.Errorf("%s already has a passcode named %q; revoke it first or choose another name", acct.User, old.App)
		}
		pepper, err := keyInUse(pepperKeyFile(), stateDir, a.NumPasscodes() > 0 || a.numOneTimeCodes() > 0)
		if err != nil {
			return err
		}
		if code, err = GeneratePasscode(); err != nil {
			return err
		}
		hash, err := HashPasscode(pepper, code)
		if err != nil {
			return err
		}
		acct.Passcodes = append(acct.Passcodes, AppPasscode{App: app, Created: stamp(), Hash: hash, Protocols: slices.Clone(protocols)})
		return nil
	})
	if err != nil {
		return "", err
	}
	return code, nil
}

// RevokePasscode deletes user's passcode for app. It returns the account
// and app spellings from the file.
func RevokePasscode(s *Store, user, app string) (owner, revoked string, err error) {
	if user, err = s.Canonical(user); err != nil {
		return "", "", err
	}
	err = s.Update(func(a *Accounts) error {
		acct := a.Lookup(user)
		if acct == nil {
			return fmt.Errorf("%s does not have 2FA on", user)
		}
		i := slices.IndexFunc(acct.Passcodes, func(pc AppPasscode) bool { return strings.EqualFold(pc.App, app) })
		if i < 0 {
			return fmt.Errorf("%s has no passcode named %q", acct.User, app)
		}
		revoked, owner = acct.Passcodes[i].App, acct.User
		acct.Passcodes = slices.Delete(acct.Passcodes, i, i+1)
		return nil
	})
	return owner, revoked, err
}
