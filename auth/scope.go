package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// ScopeProtocols are the protocol names a passcode's scope may list: the
// protocols of config's [[listener]] protocol, in their canonical order.
var ScopeProtocols = []string{"imap", "pop3", "submission"}

// ValidateProtocols checks a passcode scope: every name one of
// ScopeProtocols (lower case, as written by ParseProtocols), none twice.
// An empty scope, meaning every protocol, is valid.
func ValidateProtocols(protocols []string) error {
	for i, p := range protocols {
		if !slices.Contains(ScopeProtocols, p) {
			return fmt.Errorf("protocols: unknown protocol %q (want %s)", p, strings.Join(ScopeProtocols, ", "))
		}
		if slices.Contains(protocols[:i], p) {
			return fmt.Errorf("protocols: %q is listed twice", p)
		}
	}
	return nil
}

// ParseProtocols parses a comma-separated scope ("imap,submission"), case
// and spaces ignored, into ScopeProtocols order. "" and "all" mean every
// protocol (a nil scope).
func ParseProtocols(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "all") {
		return nil, nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		out = append(out, strings.ToLower(strings.TrimSpace(f)))
	}
	if err := ValidateProtocols(out); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b string) int {
		return slices.Index(ScopeProtocols, a) - slices.Index(ScopeProtocols, b)
	})
	return out, nil
}

// FormatProtocols writes a scope for people: "imap,submission", or "all".
func FormatProtocols(protocols []string) string {
	if len(protocols) == 0 {
		return "all"
	}
	return strings.Join(protocols, ",")
}

// inScope reports whether protocol is allowed by scope. An empty scope
// allows everything, and so does an empty protocol (a caller that does not
// say which protocol it serves).
func inScope(scope []string, protocol string) bool {
	return len(scope) == 0 || protocol == "" || slices.Contains(scope, protocol)
}

// passcodeID derives a passcode's ID from its encoded hash: 16 hex digits
// of its SHA-256. The hash is salted, so the ID is unique per passcode; it
// reveals nothing the hash does not.
func passcodeID(hash string) string {
	if hash == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(hash))
	return hex.EncodeToString(sum[:8])
}
