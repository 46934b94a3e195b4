package username

import (
	"errors"
	"strings"
	"testing"
)

// The spellings of one account, and what is refused, under each kind of
// policy.
func TestCanonical(t *testing.T) {
	none, _ := New(nil, "", nil)
	local, err := New([]string{"Kyokyo-U.ac.jp", "mail.kyokyo-u.ac.jp"}, FormatLocal, []string{"partner.example"})
	if err != nil {
		t.Fatal(err)
	}
	address, err := New([]string{"kyokyo-u.ac.jp", "mail.kyokyo-u.ac.jp"}, FormatAddress, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p    *Policy
		name string
		want string
		err  error
	}{
		{local, "alice", "alice", nil},
		{local, "ALICE", "alice", nil},
		{local, "alice@kyokyo-u.ac.jp", "alice", nil},
		{local, "ALICE@KYOKYO-U.AC.JP", "alice", nil},
		{local, "alice@mail.kyokyo-u.ac.jp", "alice", nil},
		{local, "bob@partner.example", "bob@partner.example", nil},
		{local, "alice@anything", "", RefusedDomain},
		{local, "alice@kyokyo-u.ac.jp.evil.example", "", RefusedDomain},
		{address, "alice", "alice@kyokyo-u.ac.jp", nil},
		{address, "Alice@Mail.Kyokyo-u.ac.jp", "alice@kyokyo-u.ac.jp", nil},
		{address, "alice@other.example", "", RefusedDomain},
		{none, "alice", "alice", nil},
		{none, "Alice@Anything", "alice@anything", nil},
		{nil, "Alice", "alice", nil},
		{local, "", "", RefusedEmpty},
		{local, strings.Repeat("a", MaxLength+1), "", RefusedLength},
		{local, "@kyokyo-u.ac.jp", "", RefusedMalformed},
		{local, "alice@", "", RefusedMalformed},
		{local, "alice@kyokyo-u.ac.jp@x", "", RefusedMalformed},
		{local, " alice", "", RefusedCharacter},
		{local, "alice ", "", RefusedCharacter},
		{local, "al ice", "", RefusedCharacter},
		{local, "alice\x00bob", "", RefusedCharacter},
		{local, "alice\r\nA1 LOGOUT", "", RefusedCharacter},
		{local, "alice\t", "", RefusedCharacter},
		{local, "alice*master", "", RefusedCharacter},
		{local, "alice%kyokyo", "", RefusedCharacter},
		{local, `alice"`, "", RefusedCharacter},
		{local, `ali\ce`, "", RefusedCharacter},
		{local, "alice\xff", "", RefusedCharacter},
		{local, "alice\u200b", "", RefusedCharacter},   // zero-width space (Cf)
		{local, "alice\u00a0", "", RefusedCharacter},   // no-break space
		{local, "Jose\u0301", "", RefusedCharacter},    // NFD: e and a combining acute
		{local, "Jos\u00e9", "jos\u00e9", nil},         // NFC
		{local, "\u0130stanbul", "", RefusedCharacter}, // İ lower-cases to two runes
		{local, "\u212aelvin", "", RefusedCharacter},   // Kelvin sign: not NFC (NFC makes it "K")
	} {
		got, err := tc.p.Canonical(tc.name)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Canonical(%q) = %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// Bad configurations are refused with a reason.
func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		domains, other []string
		format         string
	}{
		{nil, nil, FormatAddress},
		{[]string{"a.example"}, nil, "upn"},
		{[]string{"a.example", "A.example"}, nil, ""},
		{[]string{"a.example"}, []string{"a.example"}, ""},
		{[]string{"@a.example"}, nil, ""},
		{[]string{"a.example."}, nil, ""},
		{[]string{""}, nil, ""},
		{[]string{"a b"}, nil, ""},
	} {
		if _, err := New(tc.domains, tc.format, tc.other); err == nil {
			t.Errorf("New(%q, %q, %q) accepted", tc.domains, tc.format, tc.other)
		}
	}
}

// Whatever the name, what is looked up is a fixed point: folding it again
// gives itself, so the lookup and the backend name (both the canonical
// name) are one account; and a refused name is refused in every spelling
// of its case.
func FuzzCanonical(f *testing.F) {
	local, err := New([]string{"kyokyo-u.ac.jp", "mail.kyokyo-u.ac.jp"}, FormatLocal, []string{"partner.example"})
	if err != nil {
		f.Fatal(err)
	}
	address, err := New([]string{"kyokyo-u.ac.jp"}, FormatAddress, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"alice", "ALICE@KYOKYO-U.AC.JP", "a@b@c", "jos\u00e9", "Jose\u0301", "\u212aelvin", "x\x00y", "bob@partner.example", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, p := range []*Policy{nil, local, address} {
			c, err := p.Canonical(name)
			if err != nil {
				var r Refusal
				if !errors.As(err, &r) {
					t.Fatalf("Canonical(%q): error %v is not a Refusal", name, err)
				}
				continue
			}
			again, err := p.Canonical(c)
			if err != nil || again != c {
				t.Fatalf("Canonical(Canonical(%q)) = %q, %v; want %q", name, again, err, c)
			}
			if c != strings.ToLower(c) {
				t.Fatalf("Canonical(%q) = %q is not lower-case", name, c)
			}
			if strings.ContainsAny(c, "\x00\r\n %*\"\\") {
				t.Fatalf("Canonical(%q) = %q holds a refused character", name, c)
			}
			if up, err := p.Canonical(strings.ToUpper(name)); err == nil && !strings.EqualFold(up, c) && strings.EqualFold(strings.ToUpper(name), name) {
				t.Fatalf("Canonical of %q and of its upper case differ: %q, %q", name, c, up)
			}
		}
	})
}
