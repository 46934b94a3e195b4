package auth

import (
	"crypto/rand"
	"fmt"
)

// OneTimeCodeCount is how many one-time codes an enrollment makes.
const OneTimeCodeCount = 10

// OneTimeCodeLen is the number of characters in a one-time code:
// 31^10 ≈ 2^49.5 possibilities, for a code that works once, is stored
// hashed with the pepper and is guarded by the lockout counters.
const OneTimeCodeLen = 10

// oneTimeAlphabet has the digits and lowercase letters that cannot be
// mistaken for one another on paper: no 0/o, 1/l/i.
const oneTimeAlphabet = "23456789abcdefghjkmnpqrstuvwxyz"

// GenerateOneTimeCode returns a new one-time code, normalized:
// OneTimeCodeLen characters drawn uniformly from an unambiguous lowercase
// alphabet with crypto/rand.
func GenerateOneTimeCode() (string, error) {
	// Rejection sampling, as GeneratePasscode: bytes at or above the
	// largest multiple of the alphabet size are discarded.
	const n = len(oneTimeAlphabet)
	const limit = 256 - 256%n
	out := make([]byte, 0, OneTimeCodeLen)
	var buf [2 * OneTimeCodeLen]byte
	for len(out) < OneTimeCodeLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("generate one-time code: %w", err)
		}
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, oneTimeAlphabet[int(b)%n])
			if len(out) == OneTimeCodeLen {
				break
			}
		}
	}
	return string(out), nil
}

// FormatOneTimeCode writes a normalized one-time code as it is shown,
// "xxxxx-xxxxx".
func FormatOneTimeCode(code string) string {
	if len(code) != OneTimeCodeLen {
		return code
	}
	return code[:OneTimeCodeLen/2] + "-" + code[OneTimeCodeLen/2:]
}

// NormalizeOneTimeCode removes ASCII spaces, tabs and hyphens from s and
// lower-cases ASCII letters. ok reports whether the result is a one-time
// code: OneTimeCodeLen characters of the alphabet.
func NormalizeOneTimeCode(s string) (normalized string, ok bool) {
	if len(s) > 4*OneTimeCodeLen {
		return "", false
	}
	out := make([]byte, 0, OneTimeCodeLen)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '-':
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		if !inAlphabet(c) || len(out) == OneTimeCodeLen {
			return "", false
		}
		out = append(out, c)
	}
	if len(out) != OneTimeCodeLen {
		return "", false
	}
	return string(out), true
}

// inAlphabet reports whether c is a one-time code character.
func inAlphabet(c byte) bool {
	for i := 0; i < len(oneTimeAlphabet); i++ {
		if oneTimeAlphabet[i] == c {
			return true
		}
	}
	return false
}

// newOneTimeCodes makes OneTimeCodeCount codes: as shown
// ("xxxxx-xxxxx") and as stored (salted HMACs keyed with the pepper, in
// the format of passcode hashes).
func newOneTimeCodes(pepper Pepper) (shown, hashes []string, err error) {
	for range OneTimeCodeCount {
		code, err := GenerateOneTimeCode()
		if err != nil {
			return nil, nil, err
		}
		h, err := hashSecret(pepper, code)
		if err != nil {
			return nil, nil, fmt.Errorf("hash one-time code: %w", err)
		}
		shown = append(shown, FormatOneTimeCode(code))
		hashes = append(hashes, h)
	}
	return shown, hashes, nil
}

// matchOneTimeCode returns the index of the hash that normalized matches,
// or -1. Every hash is checked, in constant time each, whatever matches.
func matchOneTimeCode(pepper Pepper, hashes []string, normalized string) int {
	match := -1
	for i, enc := range hashes {
		h, err := parseHash(enc)
		if err == nil && h.verify(pepper, normalized) && match < 0 {
			match = i
		}
	}
	return match
}
