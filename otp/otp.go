// Package otp implements the time-based one-time passwords (TOTP, RFC 6238)
// that authenticator apps (Google Authenticator, Microsoft Authenticator,
// Authy) compute: HMAC-SHA-1, 6 digits, a 30-second step, and ±1 step of
// clock skew accepted. These are the only parameters the three apps agree
// on, so they are constants, not options.
//
// The secret is 80 random bits, shown to the user as a 16-character base32
// key grouped in fours ("ABCD EFGH IJKL MNOP") and as a QR code of its
// otpauth:// URI. A verified code names the time step it matched; a
// ReplayGuard refuses that step (and older ones) for the same user, so a
// code once used cannot be used again.
//
// The HOTP computation (RFC 4226) is github.com/pquerna/otp's; the QR code
// is drawn with github.com/boombuler/barcode.
package otp

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	potp "github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

// Digits is the length of a code.
const Digits = 6

// Period is the length of a time step (RFC 6238's X).
const Period = 30 * time.Second

// Skew is how many steps before and after the current one Verify accepts,
// for clocks that are off by up to Period (RFC 6238 §5.2 recommends at most
// one step).
const Skew = 1

// SecretSize is the length in bytes of a secret from NewSecret: 80 bits,
// which base32 writes as exactly 16 characters.
const SecretSize = 10

// b32 is RFC 4648 base32 without padding, as authenticator apps expect.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewSecret returns SecretSize random bytes from crypto/rand.
func NewSecret() ([]byte, error) {
	s := make([]byte, SecretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("otp: new secret: %w", err)
	}
	return s, nil
}

// FormatKey writes secret as the key a user types into an authenticator
// app: base32 (RFC 4648, no padding), in groups of four separated by a
// space. A SecretSize secret gives "ABCD EFGH IJKL MNOP".
func FormatKey(secret []byte) string {
	k := b32.EncodeToString(secret)
	var b strings.Builder
	for i := 0; i < len(k); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k[i:min(i+4, len(k))])
	}
	return b.String()
}

// ParseKey is the inverse of FormatKey. ASCII spaces, tabs and hyphens, a
// trailing "=" padding and letter case are ignored. An empty key is an
// error.
func ParseKey(key string) ([]byte, error) {
	k := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '-':
			return -1
		}
		return r
	}, key)
	k = strings.ToUpper(strings.TrimRight(k, "="))
	if k == "" {
		return nil, errors.New("otp: empty key")
	}
	s, err := b32.DecodeString(k)
	if err != nil {
		return nil, fmt.Errorf("otp: key is not base32: %w", err)
	}
	return s, nil
}

// URI returns the otpauth:// URI that authenticator apps read from a QR
// code (Google's Key Uri Format):
//
//	otpauth://totp/Issuer:account?secret=KEY&issuer=Issuer&algorithm=SHA1&digits=6&period=30
//
// Issuer and account are percent-encoded (a space as %20, a colon as %3A:
// the label's own colon is the only literal one); "@" stays as it is. An
// empty issuer leaves out the prefix and the issuer parameter.
func URI(issuer, account string, secret []byte) string {
	var b strings.Builder
	b.WriteString("otpauth://totp/")
	if issuer != "" {
		b.WriteString(escape(issuer))
		b.WriteByte(':')
	}
	b.WriteString(escape(account))
	b.WriteString("?secret=")
	b.WriteString(b32.EncodeToString(secret))
	if issuer != "" {
		b.WriteString("&issuer=")
		b.WriteString(escape(issuer))
	}
	fmt.Fprintf(&b, "&algorithm=SHA1&digits=%d&period=%d", Digits, int(Period/time.Second))
	return b.String()
}

// escape percent-encodes every byte of s except RFC 3986's unreserved
// characters and "@", which is legal in both the path and the query and
// keeps an e-mail address readable.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '@':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// Step returns the RFC 6238 time step of t: floor(unix seconds / Period).
func Step(t time.Time) int64 {
	sec := t.Unix()
	p := int64(Period / time.Second)
	if sec < 0 {
		return (sec - p + 1) / p
	}
	return sec / p
}

// Code returns the code for secret at time t.
func Code(secret []byte, t time.Time) string {
	return codeAt(secret, Step(t))
}

// codeAt returns the code for secret at step, or "" in the case (which
// cannot happen for a step computed from a time after 1970) that the HOTP
// library refuses. "" never verifies.
func codeAt(secret []byte, step int64) string {
	if step < 0 {
		return ""
	}
	c, err := hotp.GenerateCodeCustom(b32.EncodeToString(secret), uint64(step), hotp.ValidateOpts{
		Digits:    potp.DigitsSix,
		Algorithm: potp.AlgorithmSHA1,
	})
	if err != nil || len(c) != Digits {
		return ""
	}
	return c
}

// NormalizeCode removes ASCII spaces and tabs from code (apps show "123
// 456"). ok reports whether the result is Digits decimal digits.
func NormalizeCode(code string) (normalized string, ok bool) {
	if len(code) > 4*Digits {
		return "", false
	}
	out := make([]byte, 0, Digits)
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case c == ' ' || c == '\t':
			continue
		case c >= '0' && c <= '9' && len(out) < Digits:
			out = append(out, c)
		default:
			return "", false
		}
	}
	if len(out) != Digits {
		return "", false
	}
	return string(out), true
}

// Verify reports whether code (spaces allowed, see NormalizeCode) is the
// code of secret at now or up to Skew steps before or after, and if so the
// step it matched. Every candidate step is computed and compared in
// constant time. When code happens to match two steps, the later one is
// returned, so that a ReplayGuard fed with it refuses the code for as long
// as it could verify.
func Verify(secret []byte, code string, now time.Time) (step int64, ok bool) {
	c, valid := NormalizeCode(code)
	if !valid {
		// Compare against a dummy anyway: a malformed code costs the same.
		c = strings.Repeat("x", Digits)
	}
	cur := Step(now)
	for s := cur - Skew; s <= cur+Skew; s++ {
		want := codeAt(secret, s)
		if subtle.ConstantTimeCompare([]byte(want), []byte(c)) == 1 && valid {
			step, ok = s, true
		}
	}
	return step, ok
}
