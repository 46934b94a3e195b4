package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/internal/userkey"
	"github.com/kanmon-mail/kanmon/otp"
)

// TOTPKeyFileName is the file in the state directory that holds the key
// sealing the TOTP secrets: 32 random bytes, mode 0600, created on the first
// enrollment. Losing it invalidates every registered authenticator (the
// users then turn 2FA off with a one-time code, or the admin resets them,
// and register again).
const TOTPKeyFileName = "totp.key"

// sealScheme prefixes every sealed TOTP secret.
const sealScheme = "aes-256-gcm"

// maxTOTPSecret bounds the length in bytes of a TOTP secret: RFC 4226
// secrets are at most the HMAC block size in practice.
const maxTOTPSecret = 64

// ErrTOTPEnrolled is EnrollTOTP's error for an account that already has an
// authenticator.
var ErrTOTPEnrolled = errors.New("2FA is already on with an authenticator; add another one instead")

// TOTPKeyPath returns the path of the TOTP sealing key in stateDir.
func TOTPKeyPath(stateDir string) string { return filepath.Join(stateDir, TOTPKeyFileName) }

// totpKeyFile describes totp.key for the key-file helpers of pepper.go.
func totpKeyFile() keyFile {
	return keyFile{name: TOTPKeyFileName, what: "totp key", loss: "every registered authenticator"}
}

// SecondFactor is the kind of code CheckSecondFactor accepted.
type SecondFactor int

const (
	// SecondFactorNone: no code was accepted.
	SecondFactorNone SecondFactor = iota
	// SecondFactorTOTP: a current authenticator code.
	SecondFactorTOTP
	// SecondFactorOneTimeCode: a one-time code, now used up.
	SecondFactorOneTimeCode
)

// String names the kind for logs: "none", "totp", "one-time code".
func (k SecondFactor) String() string {
	switch k {
	case SecondFactorTOTP:
		return "totp"
	case SecondFactorOneTimeCode:
		return "one-time code"
	}
	return "none"
}

// EnrollTOTP registers an authenticator for user: secret, which the user has
// just proved to hold by typing a correct code, is sealed into the accounts
// file, and OneTimeCodeCount new one-time codes replace any old ones. It
// returns the one-time codes as they are shown ("xxxxx-xxxxx"), the only
// time they are available.
//
// An account not listed yet is added: 2FA turns on. An account the admin
// listed without an authenticator keeps its passcodes and its Enabled
// time. An account with an authenticator already gets ErrTOTPEnrolled and
// nothing changes: a new device is registered by turning 2FA off first.
// The pepper and the TOTP key are created in stateDir if needed.
func EnrollTOTP(s *Store, stateDir, user string, secret []byte) (oneTimeCodes []string, err error) {
	return EnrollAuthenticator(s, stateDir, user, LegacyAuthenticatorName, secret)
}

// EnrollAuthenticator is EnrollTOTP with the authenticator's name.
func EnrollAuthenticator(s *Store, stateDir, user, name string, secret []byte) (oneTimeCodes []string, err error) {
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	if err := ValidateAuthenticatorName(name); err != nil {
		return nil, err
	}
	if len(secret) < otp.SecretSize || len(secret) > maxTOTPSecret {
		return nil, fmt.Errorf("enroll totp: secret has %d bytes, want %d to %d", len(secret), otp.SecretSize, maxTOTPSecret)
	}
	if user, err = s.Canonical(user); err != nil {
		return nil, err
	}
	err = s.Update(func(a *Accounts) error {
		acct := a.Lookup(user)
		if acct.HasTOTP() {
			return ErrTOTPEnrolled
		}
		key, pepper, err := enrollmentKeys(a, stateDir)
		if err != nil {
			return err
		}
		now := stamp()
		if acct == nil {
			a.Accounts = append(a.Accounts, Account{User: user, Enabled: now})
			acct = &a.Accounts[len(a.Accounts)-1]
		}
		sealed, err := sealTOTP(key, acct.User, secret)
		if err != nil {
			return err
		}
		shown, hashes, err := newOneTimeCodes(pepper)
		if err != nil {
			return err
		}
		acct.Authenticators = []Authenticator{{Name: name, TOTP: sealed, Added: now}}
		acct.OneTimeCodes = hashes
		oneTimeCodes = shown
		return nil
	})
	if err != nil {
		return nil, err
	}
	return oneTimeCodes, nil
}

// enrollmentKeys returns the TOTP key and the pepper to enroll with. Each
// is created in stateDir only while nothing in a depends on it: a key or
// pepper lost from a state_dir whose accounts use it is an error to
// repair (restore the file), never silently replaced by a new one that
// would make every existing authenticator or hash unusable.
func enrollmentKeys(a *Accounts, stateDir string) (key []byte, pepper Pepper, err error) {
	var sealed, hashed bool
	for i := range a.Accounts {
		acct := &a.Accounts[i]
		sealed = sealed || acct.HasTOTP()
		hashed = hashed || len(acct.Passcodes) > 0 || len(acct.OneTimeCodes) > 0
	}
	if key, err = keyInUse(totpKeyFile(), stateDir, sealed); err != nil {
		return nil, nil, err
	}
	p, err := keyInUse(pepperKeyFile(), stateDir, hashed)
	if err != nil {
		return nil, nil, err
	}
	return key, Pepper(p), nil
}

// SecondFactorResult is what CheckSecondFactorExcept accepted.
type SecondFactorResult struct {
	// Kind is the kind of code; SecondFactorNone when none was accepted.
	Kind SecondFactor
	// Authenticator and AuthenticatorID name the authenticator whose
	// code it was (Kind SecondFactorTOTP).
	Authenticator, AuthenticatorID string
}

// CheckSecondFactor verifies code for user, who must have an authenticator
// registered: a TOTP code (6 digits, spaces allowed) of the current time
// step ±otp.Skew, from any of the account's authenticators, that g has not
// claimed for user at this or a later step (the replay guard is per
// account, not per authenticator), or
// an unused one-time code (hyphens, spaces and case do not matter), which
// it consumes with a locked rewrite of the accounts file, so that it works
// exactly once even with concurrent sign-ins.
//
// ok is false, with a nil error, for a wrong, replayed or malformed code and
// for a user without an authenticator. err is for what is not the user's
// doing: an unreadable accounts file, a missing pepper or TOTP key, or a
// sealed secret that does not open (a wrong totp.key, an edited file), and
// a replay guard that could not decide (a shared one whose Redis is down):
// the code is refused then, never accepted unchecked.
func CheckSecondFactor(s *Store, stateDir, user, code string, now time.Time, g otp.Replay) (kind SecondFactor, ok bool, err error) {
	r, ok, err := CheckSecondFactorExcept(s, stateDir, user, code, now, g, "")
	return r.Kind, ok, err
}

// CheckSecondFactorExcept is CheckSecondFactor that does not take a code
// of the authenticator called except (none when empty): adding or removing
// one needs a code from another, or a one-time code.
func CheckSecondFactorExcept(s *Store, stateDir, user, code string, now time.Time, g otp.Replay, except string) (r SecondFactorResult, ok bool, err error) {
	if g == nil {
		return r, false, errors.New("check second factor: no replay guard")
	}
	if user, err = s.Canonical(user); err != nil {
		return r, false, err
	}
	if c, isTOTP := otp.NormalizeCode(code); isTOTP {
		return checkTOTP(s, stateDir, user, c, now, g, except)
	}
	c, isOneTime := NormalizeOneTimeCode(code)
	if !isOneTime {
		return r, false, nil
	}
	err = s.Update(func(a *Accounts) error {
		acct := a.Lookup(user)
		if !acct.HasTOTP() || len(acct.OneTimeCodes) == 0 {
			return ErrNoChange
		}
		pepper, err := pepperKeyFile().load(stateDir)
		if err != nil {
			return err
		}
		i := matchOneTimeCode(Pepper(pepper), acct.OneTimeCodes, c)
		if i < 0 {
			return ErrNoChange
		}
		acct.OneTimeCodes = slices.Delete(acct.OneTimeCodes, i, i+1)
		ok = true
		return nil
	})
	if err != nil || !ok {
		return r, false, err
	}
	return SecondFactorResult{Kind: SecondFactorOneTimeCode}, true, nil
}

// checkTOTP is CheckSecondFactorExcept for a 6-digit code c: every
// authenticator of the account but except is tried, each the same way
// whatever the one before said, and a match is claimed from g.
func checkTOTP(s *Store, stateDir, user, c string, now time.Time, g otp.Replay, except string) (r SecondFactorResult, ok bool, err error) {
	a, err := s.Read()
	if err != nil {
		return r, false, err
	}
	acct := a.Lookup(user)
	if !acct.HasTOTP() {
		return r, false, nil
	}
	key, err := totpKeyFile().load(stateDir)
	if err != nil {
		return r, false, err
	}
	var step int64
	for _, au := range acct.AllAuthenticators() {
		if except != "" && strings.EqualFold(au.Name, except) {
			continue
		}
		secret, err := openTOTP(key, acct.User, au.TOTP)
		if err != nil {
			return SecondFactorResult{}, false, fmt.Errorf("account %q, authenticator %q: %w", acct.User, au.Name, err)
		}
		st, match := otp.Verify(secret, c, now)
		clear(secret)
		if match && !ok {
			ok, step = true, st
			r = SecondFactorResult{Kind: SecondFactorTOTP, Authenticator: au.Name, AuthenticatorID: au.ID()}
		}
	}
	if !ok {
		return SecondFactorResult{}, false, nil
	}
	fresh, err := g.Claim(acct.User, step)
	if err != nil {
		return SecondFactorResult{}, false, fmt.Errorf("totp replay guard: %w", err)
	}
	if !fresh {
		return SecondFactorResult{}, false, nil
	}
	return r, true, nil
}

// sealTOTP encrypts secret with AES-256-GCM under key, a fresh random
// nonce and the case-folded user name as additional data, so a sealed
// secret copied to another account does not open.
func sealTOTP(key []byte, user string, secret []byte) (string, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal totp secret: %w", err)
	}
	ct := aead.Seal(nil, nonce, secret, []byte(userkey.Fold(user)))
	enc := base64.RawURLEncoding
	return sealScheme + "$" + enc.EncodeToString(nonce) + "$" + enc.EncodeToString(ct), nil
}

// openTOTP decrypts a sealed secret of user; any failure is an error.
func openTOTP(key []byte, user, sealed string) ([]byte, error) {
	nonce, ct, err := parseSealed(sealed)
	if err != nil {
		return nil, fmt.Errorf("malformed totp: %w", err)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, nonce, ct, []byte(userkey.Fold(user)))
	if err != nil {
		return nil, errors.New("the totp secret does not open: wrong totp.key, or the totp line was changed or copied from another account")
	}
	return secret, nil
}

// newAEAD returns AES-256-GCM with key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("totp key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("totp key: %w", err)
	}
	return aead, nil
}

// gcmNonceSize and gcmTagSize are AES-GCM's standard sizes, for parsing.
const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// parseSealed decodes "aes-256-gcm$nonce$ciphertext" and checks the sizes.
func parseSealed(sealed string) (nonce, ct []byte, err error) {
	scheme, rest, ok := strings.Cut(sealed, "$")
	if !ok || scheme != sealScheme {
		return nil, nil, fmt.Errorf("want %q followed by $nonce$ciphertext", sealScheme+"$")
	}
	n, c, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, nil, fmt.Errorf("want %s$nonce$ciphertext", sealScheme)
	}
	enc := base64.RawURLEncoding.Strict()
	if nonce, err = enc.DecodeString(n); err != nil || len(nonce) != gcmNonceSize {
		return nil, nil, fmt.Errorf("nonce is not %d bytes of unpadded base64url", gcmNonceSize)
	}
	ct, err = enc.DecodeString(c)
	if err != nil || len(ct) < gcmTagSize+otp.SecretSize || len(ct) > gcmTagSize+maxTOTPSecret {
		return nil, nil, fmt.Errorf("ciphertext is not %d to %d bytes of unpadded base64url", gcmTagSize+otp.SecretSize, gcmTagSize+maxTOTPSecret)
	}
	return nonce, ct, nil
}

// fieldError is a validation error about one key of an [[account]].
type fieldError struct {
	key string
	err error
}

// validateTOTP checks the TOTP fields of an account read from a file:
// totp well-formed, totp and totp_enrolled together, one-time codes only
// with totp and each a well-formed hash.
func (a *Account) validateTOTP() *fieldError {
	switch {
	case a.TOTP != "":
		if _, _, err := parseSealed(a.TOTP); err != nil {
			return &fieldError{"totp", fmt.Errorf("malformed totp: %w", err)}
		}
		if a.TOTPEnrolled.IsZero() {
			return &fieldError{"totp", errors.New("totp needs totp_enrolled (when the authenticator was registered)")}
		}
	case !a.TOTPEnrolled.IsZero():
		return &fieldError{"totp_enrolled", errors.New("totp_enrolled without totp")}
	case len(a.OneTimeCodes) > 0 && len(a.Authenticators) == 0:
		return &fieldError{"one_time_codes", errors.New("one_time_codes without an authenticator (they are only for accounts with one)")}
	}
	for k, h := range a.OneTimeCodes {
		if _, err := parseHash(h); err != nil {
			return &fieldError{"one_time_codes", fmt.Errorf("one_time_codes[%d]: malformed hash: %w", k, err)}
		}
	}
	return nil
}
