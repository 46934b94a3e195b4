// Package username turns the user name a client typed into the one
// canonical account name that every part of kanmon uses: the 2FA lookup,
// the lockout keys, last use, the session registry, the portal, the CLI,
// the logs, and the name the backend is logged into.
//
// Mail servers accept more than one spelling of an account: Dovecot with
// auth_username_format = %Ln, Zimbra and Active Directory (UPN) take
// "alice" and "alice@campus.example" alike. If kanmon keyed 2FA on the
// spelling, "alice@campus.example" would be a second account without 2FA.
// So a Policy folds every spelling in a local domain to one name, refuses
// names in other domains unless the admin lists them, and refuses the
// characters that backends drop or treat specially, the same way for the
// lookup and for the backend, so that kanmon never checks one name and
// logs the backend into another.
package username

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// MaxLength is the longest user name accepted, in octets: a mailbox's
// local part (64) and domain (255) with the "@" (RFC 5321 §4.5.3.1.1 and
// §4.5.3.1.2).
const MaxLength = 64 + 1 + 255

// Formats of the canonical name, accepted in [users] format.
const (
	// FormatLocal strips a local domain: "alice" (Dovecot %Ln, Zimbra).
	FormatLocal = "local"
	// FormatAddress keeps the first local domain: "alice@campus.example"
	// (Active Directory UPN, a Dovecot keyed on %Lu).
	FormatAddress = "address"
)

// A Refusal says why a name was refused. The client gets the uniform
// failure reply; the reason goes to the log.
type Refusal int

// The refusals.
const (
	// RefusedEmpty is an empty name.
	RefusedEmpty Refusal = iota + 1
	// RefusedLength is a name over MaxLength.
	RefusedLength
	// RefusedCharacter is a name with a character that backends drop,
	// normalise or give a meaning: a control character (NUL, CR, LF), a
	// space, "%" or "*" (Dovecot's master-user separators), a quote or a
	// backslash, invalid UTF-8, or Unicode that is not in NFC or does
	// not lower-case to a spelling of itself.
	RefusedCharacter
	// RefusedMalformed is an "@" without a local part or a domain, or
	// more than one "@".
	RefusedMalformed
	// RefusedDomain is a domain that is neither local nor listed in
	// other_domains, while local domains are configured.
	RefusedDomain
)

// Error is the refusal's log text.
func (r Refusal) Error() string {
	switch r {
	case RefusedEmpty:
		return "user name is empty"
	case RefusedLength:
		return fmt.Sprintf("user name is longer than %d octets", MaxLength)
	case RefusedCharacter:
		return "user name has a character kanmon does not accept"
	case RefusedMalformed:
		return "user name is not name or name@domain"
	case RefusedDomain:
		return "user name is in a domain that is not configured"
	}
	return "user name refused"
}

// Policy is how names fold to accounts. The zero value knows no domains:
// it checks characters and lower-cases, and keeps any "@domain".
type Policy struct {
	domains []string // local domains, lower-case; domains[0] for FormatAddress
	address bool     // FormatAddress
	other   map[string]bool
}

// New returns the policy for the local domains, the canonical format
// (FormatLocal or FormatAddress; "" is FormatLocal) and the other domains
// whose names are accepted as full addresses.
func New(domains []string, format string, otherDomains []string) (*Policy, error) {
	p := &Policy{other: map[string]bool{}}
	switch format {
	case "", FormatLocal:
	case FormatAddress:
		if len(domains) == 0 {
			return nil, errors.New(`format "address" needs at least one local domain`)
		}
		p.address = true
	default:
		return nil, fmt.Errorf("format %q: want %q or %q", format, FormatLocal, FormatAddress)
	}
	seen := map[string]bool{}
	for i, list := range [][]string{domains, otherDomains} {
		for _, d := range list {
			d, err := checkDomain(d)
			if err != nil {
				return nil, err
			}
			if seen[d] {
				return nil, fmt.Errorf("domain %q is listed twice in domains and other_domains", d)
			}
			seen[d] = true
			if i == 0 {
				p.domains = append(p.domains, d)
			} else {
				p.other[d] = true
			}
		}
	}
	return p, nil
}

// checkDomain lower-cases a configured domain and checks it is one.
func checkDomain(d string) (string, error) {
	l, err := fold(d)
	if err != nil || l == "" || strings.ContainsAny(l, "@") || strings.HasPrefix(l, ".") || strings.HasSuffix(l, ".") {
		return "", fmt.Errorf("domain %q is not a domain name", d)
	}
	return l, nil
}

// HasDomains reports whether local domains are configured.
func (p *Policy) HasDomains() bool { return p != nil && len(p.domains) > 0 }

// Canonical returns the account name for name as a client typed it, or a
// Refusal. The result is lower-case, and Canonical(Canonical(x)) ==
// Canonical(x).
func (p *Policy) Canonical(name string) (string, error) {
	l, err := fold(name)
	if err != nil {
		return "", err
	}
	local, domain, hasDomain := strings.Cut(l, "@")
	if hasDomain && (local == "" || domain == "" || strings.Contains(domain, "@")) {
		return "", RefusedMalformed
	}
	if p == nil {
		return l, nil
	}
	switch {
	case !hasDomain || p.local(domain):
		if p.address {
			if len(local)+1+len(p.domains[0]) > MaxLength {
				return "", RefusedLength
			}
			return local + "@" + p.domains[0], nil
		}
		if !hasDomain || len(p.domains) > 0 {
			return local, nil
		}
	case p.other[domain]:
		return l, nil
	case len(p.domains) > 0:
		return "", RefusedDomain
	}
	return l, nil
}

// Local returns the part of a canonical name before its "@", and whether
// it had one.
func Local(canonical string) (local string, hadDomain bool) {
	local, _, hadDomain = strings.Cut(canonical, "@")
	return local, hadDomain
}

// local reports whether domain is one of the local domains.
func (p *Policy) local(domain string) bool {
	for _, d := range p.domains {
		if d == domain {
			return true
		}
	}
	return false
}

// fold checks name's characters and lower-cases it.
func fold(name string) (string, error) {
	switch {
	case name == "":
		return "", RefusedEmpty
	case len(name) > MaxLength:
		return "", RefusedLength
	case !utf8.ValidString(name):
		return "", RefusedCharacter
	}
	ascii := true
	for _, r := range name {
		if r >= utf8.RuneSelf {
			ascii = false
		}
		if r < 0x20 || r == 0x7f || unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`%*"\`, r) ||
			unicode.Is(unicode.Cf, r) {
			return "", RefusedCharacter
		}
	}
	if ascii {
		return strings.ToLower(name), nil
	}
	// Beyond ASCII only what stays one spelling of itself: NFC, and a
	// lower-case form that strings.EqualFold takes for the same name
	// (not "İ", whose lower case is two runes).
	lower := strings.ToLower(name)
	if !norm.NFC.IsNormalString(name) || !strings.EqualFold(name, lower) || !norm.NFC.IsNormalString(lower) {
		return "", RefusedCharacter
	}
	return lower, nil
}
