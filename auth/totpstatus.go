package auth

import (
	"slices"
	"time"
)

// TwoFAStatus is what the admin (kanmon 2fa status) and the portal show
// about one account's 2FA. It holds no secret: passcodes carry only their
// hashes (for AppPasscode.ID), and the TOTP secret and one-time codes only
// as facts.
type TwoFAStatus struct {
	// User is the account's spelling in the accounts file, or the name
	// asked about when 2FA is off.
	User string
	// On reports whether the account is in the accounts file.
	On bool
	// Enabled is when 2FA was turned on; zero when off.
	Enabled time.Time
	// TOTPEnrolled is when the first authenticator still registered was
	// added; zero when there is none (2FA off, or passcodes managed by
	// the admin).
	TOTPEnrolled time.Time
	// OneTimeCodesLeft is how many one-time codes are still unused.
	OneTimeCodesLeft int
	// Passcodes are the account's app passcodes, in file order.
	Passcodes []AppPasscode
	// Authenticators are the registered authenticators, in file order.
	Authenticators []AuthenticatorInfo
}

// AuthenticatorInfo is what may be shown of an authenticator: never its
// secret.
type AuthenticatorInfo struct {
	// Name is the user's name for it.
	Name string
	// Added is when it was registered.
	Added time.Time
	// ID keys its last use (Authenticator.ID).
	ID string
}

// HasTOTP reports whether an authenticator is registered.
func (st TwoFAStatus) HasTOTP() bool { return !st.TOTPEnrolled.IsZero() }

// Status reads user's 2FA status from the accounts file. A user without
// 2FA is not an error: On is false.
func Status(s *Store, user string) (TwoFAStatus, error) {
	user, err := s.Canonical(user)
	if err != nil {
		return TwoFAStatus{}, err
	}
	a, err := s.Read()
	if err != nil {
		return TwoFAStatus{}, err
	}
	acct := a.Lookup(user)
	if acct == nil {
		return TwoFAStatus{User: user}, nil
	}
	st := TwoFAStatus{
		User:             acct.User,
		On:               true,
		Enabled:          acct.Enabled,
		OneTimeCodesLeft: len(acct.OneTimeCodes),
		Passcodes:        slices.Clone(acct.Passcodes),
	}
	for _, au := range acct.AllAuthenticators() {
		st.Authenticators = append(st.Authenticators, AuthenticatorInfo{Name: au.Name, Added: au.Added, ID: au.ID()})
		if st.TOTPEnrolled.IsZero() || au.Added.Before(st.TOTPEnrolled) {
			st.TOTPEnrolled = au.Added
		}
	}
	return st, nil
}
