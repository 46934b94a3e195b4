package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// PasscodeLen is the number of letters in an app passcode. 26^16 ≈ 2^75.
const PasscodeLen = 16

// hashScheme prefixes every encoded passcode hash.
const hashScheme = "hmac-sha256"

// saltLen is the length in bytes of the random salt in a passcode hash.
const saltLen = 16

// maxSecretLen bounds the input NormalizePasscode looks at: a passcode with
// a space between every letter and some slack. Longer secrets are not
// passcodes and are rejected without further work.
const maxSecretLen = 4 * PasscodeLen

// GeneratePasscode returns a new app passcode: PasscodeLen uppercase letters
// A–Z drawn uniformly from crypto/rand (about 75 bits).
func GeneratePasscode() (string, error) {
	// Rejection sampling: a byte below 234 = 9*26 maps to a letter without
	// modulo bias; 22 of 256 byte values are discarded.
	const limit = 256 - 256%26
	out := make([]byte, 0, PasscodeLen)
	var buf [2 * PasscodeLen]byte
	for len(out) < PasscodeLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("generate passcode: %w", err)
		}
		for _, b := range buf {
			if b >= limit {
				continue
			}
			out = append(out, 'A'+b%26)
			if len(out) == PasscodeLen {
				break
			}
		}
	}
	return string(out), nil
}

// FormatPasscode groups a passcode in fours for display: "ABCD EFGH IJKL
// MNOP". Users may type it with or without the spaces.
func FormatPasscode(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p[i:min(i+4, len(p))])
	}
	return b.String()
}

// NormalizePasscode removes ASCII spaces and tabs from secret and upper-cases
// ASCII letters. ok reports whether the result is a passcode: exactly
// PasscodeLen letters A–Z. A user's ordinary password is typically not.
func NormalizePasscode(secret string) (normalized string, ok bool) {
	if len(secret) > maxSecretLen {
		return "", false
	}
	out := make([]byte, 0, PasscodeLen)
	for i := 0; i < len(secret); i++ {
		c := secret[i]
		switch {
		case c == ' ' || c == '\t':
			continue
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z':
		default:
			return "", false
		}
		if len(out) == PasscodeLen {
			return "", false
		}
		out = append(out, c)
	}
	if len(out) != PasscodeLen {
		return "", false
	}
	return string(out), true
}

// HashPasscode hashes a normalized passcode for the accounts file: a random
// 16-byte salt and HMAC-SHA256(key=pepper, salt||passcode), encoded as
// "hmac-sha256$" + base64url(salt) + "$" + base64url(mac), unpadded.
func HashPasscode(pepper Pepper, normalized string) (string, error) {
	if len(pepper) == 0 {
		return "", errors.New("hash passcode: empty pepper")
	}
	if n, ok := NormalizePasscode(normalized); !ok || n != normalized {
		return "", errors.New("hash passcode: not a normalized passcode")
	}
	h, err := hashSecret(pepper, normalized)
	if err != nil {
		return "", fmt.Errorf("hash passcode: %w", err)
	}
	return h, nil
}

// hashSecret encodes a new salted hash of a normalized secret (a passcode
// or a one-time code): "hmac-sha256$" + base64url(salt) + "$" +
// base64url(HMAC-SHA256(pepper, salt||secret)).
func hashSecret(pepper Pepper, normalized string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	return hashScheme + "$" + enc.EncodeToString(salt) + "$" + enc.EncodeToString(passcodeMAC(pepper, salt, normalized)), nil
}

// VerifyPasscode reports whether normalized is the passcode encoded was made
// from with this pepper. The comparison is constant-time. A malformed
// encoding or an empty pepper never verifies.
func VerifyPasscode(pepper Pepper, encoded, normalized string) bool {
	h, err := parseHash(encoded)
	if err != nil || len(pepper) == 0 {
		return false
	}
	return h.verify(pepper, normalized)
}

// passcodeHash is a decoded passcode hash.
type passcodeHash struct {
	salt []byte
	mac  []byte
}

// verify recomputes the MAC of normalized and compares in constant time.
func (h passcodeHash) verify(pepper Pepper, normalized string) bool {
	return hmac.Equal(passcodeMAC(pepper, h.salt, normalized), h.mac)
}

// parseHash decodes "hmac-sha256$salt$mac".
func parseHash(encoded string) (passcodeHash, error) {
	scheme, rest, ok := strings.Cut(encoded, "$")
	if !ok || scheme != hashScheme {
		return passcodeHash{}, fmt.Errorf("want %q followed by $salt$mac", hashScheme+"$")
	}
	s, m, ok := strings.Cut(rest, "$")
	if !ok {
		return passcodeHash{}, errors.New("want hmac-sha256$salt$mac")
	}
	enc := base64.RawURLEncoding.Strict()
	salt, err := enc.DecodeString(s)
	if err != nil || len(salt) != saltLen {
		return passcodeHash{}, fmt.Errorf("salt is not %d bytes of unpadded base64url", saltLen)
	}
	mac, err := enc.DecodeString(m)
	if err != nil || len(mac) != sha256.Size {
		return passcodeHash{}, fmt.Errorf("mac is not %d bytes of unpadded base64url", sha256.Size)
	}
	return passcodeHash{salt: salt, mac: mac}, nil
}

// passcodeMAC is HMAC-SHA256(key=pepper, salt||passcode).
func passcodeMAC(pepper Pepper, salt []byte, passcode string) []byte {
	m := hmac.New(sha256.New, pepper)
	m.Write(salt)
	m.Write([]byte(passcode))
	return m.Sum(nil)
}
