package auth

import (
	"strings"
	"testing"
)

func TestGenerateOneTimeCode(t *testing.T) {
	counts := map[rune]int{}
	for range 1000 {
		c, err := GenerateOneTimeCode()
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := NormalizeOneTimeCode(c); !ok || n != c || len(c) != OneTimeCodeLen {
			t.Fatalf("generated %q is not a normalized code", c)
		}
		for _, r := range c {
			counts[r]++
		}
	}
	// 10,000 characters over 31: every character shows up, none is
	// ambiguous on paper.
	if len(counts) != len(oneTimeAlphabet) {
		t.Errorf("%d distinct characters, want %d", len(counts), len(oneTimeAlphabet))
	}
	for _, r := range "01ilo" {
		if strings.ContainsRune(oneTimeAlphabet, r) {
			t.Errorf("alphabet has ambiguous %q", r)
		}
	}
}

func TestNormalizeOneTimeCode(t *testing.T) {
	for in, want := range map[string]string{
		"abcde-fghjk":    "abcdefghjk",
		"ABCDE-FGHJK":    "abcdefghjk",
		"abcdefghjk":     "abcdefghjk",
		" abcde fghjk ":  "abcdefghjk",
		"ab-cd-ef-gh-jk": "abcdefghjk",
		"23456\t789ab":   "23456789ab",
		"abcde-fghj":     "",
		"abcde-fghjkm":   "",
		"abcde-fghjo":    "", // o is not in the alphabet
		"abcde-fghj1":    "",
		"abcde_fghjk":    "",
		"123456":         "",
		"":               "",
		"ａｂｃｄｅ-ｆｇｈｊｋ":    "",
	} {
		got, ok := NormalizeOneTimeCode(in)
		if ok != (want != "") || got != want {
			t.Errorf("NormalizeOneTimeCode(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if got := FormatOneTimeCode("abcdefghjk"); got != "abcde-fghjk" {
		t.Errorf("FormatOneTimeCode = %q", got)
	}
}

func TestOneTimeCodeHashes(t *testing.T) {
	pepper := Pepper(make([]byte, PepperSize))
	shown, hashes, err := newOneTimeCodes(pepper)
	if err != nil {
		t.Fatal(err)
	}
	if len(shown) != OneTimeCodeCount || len(hashes) != OneTimeCodeCount {
		t.Fatalf("%d codes, %d hashes", len(shown), len(hashes))
	}
	for i, c := range shown {
		n, _ := NormalizeOneTimeCode(c)
		if got := matchOneTimeCode(pepper, hashes, n); got != i {
			t.Errorf("code %d matched hash %d", i, got)
		}
		if _, err := parseHash(hashes[i]); err != nil {
			t.Errorf("hash %d: %v", i, err)
		}
		if strings.Contains(hashes[i], n) {
			t.Errorf("hash %d contains its code", i)
		}
	}
	other := Pepper([]byte(strings.Repeat("x", PepperSize)))
	n, _ := NormalizeOneTimeCode(shown[0])
	if got := matchOneTimeCode(other, hashes, n); got != -1 {
		t.Errorf("matched under another pepper: %d", got)
	}
}
