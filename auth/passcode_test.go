package auth

import (
	"strings"
	"testing"
)

func TestGeneratePasscode(t *testing.T) {
	const n = 4000
	var counts [26]int
	seen := map[string]bool{}
	for range n {
		p, err := GeneratePasscode()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != PasscodeLen {
			t.Fatalf("len(%q) = %d", p, len(p))
		}
		for _, c := range []byte(p) {
			if c < 'A' || c > 'Z' {
				t.Fatalf("%q has %q outside A-Z", p, c)
			}
			counts[c-'A']++
		}
		if seen[p] {
			t.Fatalf("duplicate passcode %q", p)
		}
		seen[p] = true
		if norm, ok := NormalizePasscode(p); !ok || norm != p {
			t.Fatalf("NormalizePasscode(%q) = %q, %v", p, norm, ok)
		}
	}
	// Chi-square goodness of fit, 25 degrees of freedom. P(chi2 > 70) is
	// about 4e-6, so this fails only for a real bias.
	expected := float64(n*PasscodeLen) / 26
	chi2 := 0.0
	for _, c := range counts {
		d := float64(c) - expected
		chi2 += d * d / expected
	}
	if chi2 > 70 {
		t.Errorf("letter distribution is not uniform: chi2 = %.1f, counts %v", chi2, counts)
	}
}

func TestFormatPasscode(t *testing.T) {
	for in, want := range map[string]string{
		"ABCDEFGHIJKLMNOP": "ABCD EFGH IJKL MNOP",
		"ABCDEF":           "ABCD EF",
		"":                 "",
	} {
		if got := FormatPasscode(in); got != want {
			t.Errorf("FormatPasscode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNormalizePasscode(t *testing.T) {
	const want = "ABCDEFGHIJKLMNOP"
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"ABCDEFGHIJKLMNOP", true},
		{"abcdefghijklmnop", true},
		{"ABCD EFGH IJKL MNOP", true},
		{"abcd efgh ijkl mnop", true},
		{"  aBcD\tEfGh ijkl   MNOP \t", true},
		{"A B C D E F G H I J K L M N O P", true},
		{"ABCDEFGHIJKLMNO", false},                             // 15 letters
		{"ABCDEFGHIJKLMNOPQ", false},                           // 17 letters
		{"ABCD-EFGH-IJKL-MNOP", false},                         // hyphens are not spaces
		{"ABCDEFGHIJKLMNO1", false},                            // digit
		{"ABCDEFGHIJKLMNOÄ", false},                            // non-ASCII letter
		{"ABCDEFGHIJKLMNOP\n", false},                          // newline is not a space
		{"ABCDEFGHIJKLMNOP\u00a0", false},                      // NBSP is not ASCII space
		{"", false},                                            // empty
		{"                ", false},                            // only spaces
		{"correct horse battery staple", false},                // a password
		{strings.Repeat(" ", 100) + "ABCDEFGHIJKLMNOP", false}, // absurdly long
	} {
		got, ok := NormalizePasscode(tc.in)
		if ok != tc.ok || (ok && got != want) || (!ok && got != "") {
			t.Errorf("NormalizePasscode(%q) = %q, %v; want ok=%v", tc.in, got, ok, tc.ok)
		}
	}
}

func FuzzNormalizePasscode(f *testing.F) {
	f.Add("abcd efgh ijkl mnop")
	f.Add("ABCDEFGHIJKLMNOP")
	f.Add("hunter2")
	f.Add("\t\t")
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := NormalizePasscode(s)
		if !ok {
			if n != "" {
				t.Fatalf("not ok but returned %q", n)
			}
			return
		}
		if len(n) != PasscodeLen || strings.Trim(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			t.Fatalf("NormalizePasscode(%q) = %q: not a passcode", s, n)
		}
		if n2, ok2 := NormalizePasscode(n); !ok2 || n2 != n {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, n, n2)
		}
		if n3, _ := NormalizePasscode(FormatPasscode(n)); n3 != n {
			t.Fatalf("formatted form does not normalize back: %q", n)
		}
	})
}

func testPepper(b byte) Pepper {
	p := make(Pepper, PepperSize)
	for i := range p {
		p[i] = b + byte(i)
	}
	return p
}

func TestHashVerify(t *testing.T) {
	pepper := testPepper(1)
	const code = "ABCDEFGHIJKLMNOP"
	h, err := HashPasscode(pepper, code)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "hmac-sha256$") || strings.Count(h, "$") != 2 || strings.Contains(h, "=") {
		t.Fatalf("encoding %q", h)
	}
	if h2, _ := HashPasscode(pepper, code); h2 == h {
		t.Errorf("two hashes of one passcode are equal: salt not random")
	}
	if !VerifyPasscode(pepper, h, code) {
		t.Errorf("right passcode does not verify")
	}
	if VerifyPasscode(pepper, h, "ABCDEFGHIJKLMNOQ") {
		t.Errorf("wrong passcode verifies")
	}
	if VerifyPasscode(pepper, h, "abcdefghijklmnop") {
		t.Errorf("unnormalized passcode verifies; callers must normalize")
	}
	if VerifyPasscode(testPepper(2), h, code) {
		t.Errorf("verifies with another pepper")
	}
	if VerifyPasscode(nil, h, code) {
		t.Errorf("verifies with no pepper")
	}
	_, salt, _ := strings.Cut(h, "$")
	salt, mac, _ := strings.Cut(salt, "$")
	flip := func(s string) string {
		c := byte('A')
		if s[0] == 'A' {
			c = 'B'
		}
		return string(c) + s[1:]
	}
	for name, bad := range map[string]string{
		"salt changed":   "hmac-sha256$" + flip(salt) + "$" + mac,
		"mac changed":    "hmac-sha256$" + salt + "$" + flip(mac),
		"scheme":         "hmac-sha512$" + salt + "$" + mac,
		"no scheme":      salt + "$" + mac,
		"padded":         h + "=",
		"short mac":      "hmac-sha256$" + salt + "$" + mac[:len(mac)-2],
		"short salt":     "hmac-sha256$" + salt[:len(salt)-2] + "$" + mac,
		"extra field":    h + "$x",
		"std base64":     "hmac-sha256$" + salt + "$" + strings.NewReplacer("-", "+", "_", "/").Replace(mac) + "+",
		"empty":          "",
		"only separator": "$$",
	} {
		if VerifyPasscode(pepper, bad, code) {
			t.Errorf("%s: %q verifies", name, bad)
		}
	}
	if _, err := HashPasscode(pepper, "abcd efgh ijkl mnop"); err == nil {
		t.Errorf("HashPasscode accepted an unnormalized passcode")
	}
	if _, err := HashPasscode(nil, code); err == nil {
		t.Errorf("HashPasscode accepted an empty pepper")
	}
}

func BenchmarkVerifyPasscode(b *testing.B) {
	pepper := testPepper(1)
	h, err := HashPasscode(pepper, "ABCDEFGHIJKLMNOP")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !VerifyPasscode(pepper, h, "ABCDEFGHIJKLMNOP") {
			b.Fatal("no match")
		}
	}
}
