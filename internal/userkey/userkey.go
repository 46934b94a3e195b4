// Package userkey folds user names into map keys, so that every part of
// kanmon (the accounts file, the lockout counters) treats "Alice" and
// "ALICE" as one account, exactly as strings.EqualFold would.
package userkey

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Fold maps s to a key equal for exactly the strings strings.EqualFold
// considers equal: each rune becomes the smallest rune of its case-folding
// orbit (lower-cased when that is ASCII, so pure-ASCII names simply
// lower-case).
func Fold(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	var b strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		if m < utf8.RuneSelf {
			m = unicode.ToLower(m)
		}
		b.WriteRune(m)
	}
	return b.String()
}
