package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kanmon-mail/kanmon/internal/userkey"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// MaxAppLen is the longest app name accepted, in characters.
const MaxAppLen = 64

// MaxUserLen is the longest user name accepted, in bytes.
const MaxUserLen = 255

// Accounts is the accounts file: every account listed has two-factor
// authentication on.
type Accounts struct {
	// Accounts are the [[account]] tables, in file order.
	Accounts []Account `toml:"account"`
}

// Account is one account with 2FA on.
type Account struct {
	// User is the account name as the backend knows it. Matched
	// case-insensitively; unique in the file.
	User string `toml:"user"`
	// Enabled is when 2FA was turned on.
	Enabled time.Time `toml:"enabled"`
	// TOTP is the secret of an authenticator registered before accounts
	// could hold several (sealed, as Authenticator.TOTP): a file written
	// then still reads, the authenticator named LegacyAuthenticatorName.
	// Reading moves it into Authenticators (Normalize); it is never
	// written.
	TOTP string `toml:"totp,omitempty"`
	// TOTPEnrolled is when that authenticator was registered; set
	// exactly when TOTP is.
	TOTPEnrolled time.Time `toml:"totp_enrolled,omitempty"`
	// Authenticators are the registered authenticator apps, the
	// [[account.authenticator]] tables, at most MaxAuthenticators; a
	// code from any of them signs in. None for an account whose 2FA the
	// admin turned on: its passcodes are managed by the admin and it
	// cannot sign in to the portal.
	Authenticators []Authenticator `toml:"authenticator"`
	// OneTimeCodes are the hashes (as HashPasscode's) of the one-time
	// codes not used yet; a used code's hash is removed. Only with TOTP.
	OneTimeCodes []string `toml:"one_time_codes,omitempty"`
	// Passcodes are the account's app passcodes, the [[account.passcode]]
	// tables that follow the [[account]].
	Passcodes []AppPasscode `toml:"passcode"`
}

// HasTOTP reports whether the account has an authenticator registered.
func (a *Account) HasTOTP() bool { return a != nil && (a.TOTP != "" || len(a.Authenticators) > 0) }

// AppPasscode is one app passcode, stored as a hash. (Named AppPasscode
// because Passcode is the Kind of decision it leads to.)
type AppPasscode struct {
	// App names the application that uses the passcode ("Thunderbird").
	// Unique per account, case-insensitively.
	App string `toml:"app"`
	// Created is when the passcode was made.
	Created time.Time `toml:"created"`
	// Hash is HashPasscode's encoding: "hmac-sha256$salt$mac".
	Hash string `toml:"hash"`
	// Protocols limits the passcode to these protocols (imap, pop3,
	// submission). Empty, the default, means every protocol. A passcode
	// used outside its scope fails like a wrong one.
	Protocols []string `toml:"protocols,omitempty"`
}

// ID is a short, stable, non-secret identifier of this very passcode
// (derived from its salted hash): a passcode revoked and re-created under
// the same app name gets a new ID. Last-use records are keyed by it.
func (p *AppPasscode) ID() string { return passcodeID(p.Hash) }

// Lookup returns the account for user, matched case-insensitively, or nil
// when user does not have 2FA on.
func (a *Accounts) Lookup(user string) *Account {
	if a == nil {
		return nil
	}
	for i := range a.Accounts {
		if strings.EqualFold(a.Accounts[i].User, user) {
			return &a.Accounts[i]
		}
	}
	return nil
}

// Passcode returns the account's passcode for app, matched
// case-insensitively, or nil.
func (a *Account) Passcode(app string) *AppPasscode {
	if a == nil {
		return nil
	}
	for i := range a.Passcodes {
		if strings.EqualFold(a.Passcodes[i].App, app) {
			return &a.Passcodes[i]
		}
	}
	return nil
}

// NumPasscodes returns the number of passcodes across all accounts.
func (a *Accounts) NumPasscodes() int {
	if a == nil {
		return 0
	}
	n := 0
	for _, acct := range a.Accounts {
		n += len(acct.Passcodes)
	}
	return n
}

// numOneTimeCodes is how many unused one-time codes the file holds.
func (a *Accounts) numOneTimeCodes() int {
	if a == nil {
		return 0
	}
	n := 0
	for _, acct := range a.Accounts {
		n += len(acct.OneTimeCodes)
	}
	return n
}

// ValidateUser checks a user name for the accounts file: not empty, at most
// MaxUserLen bytes, valid UTF-8, printable, no leading or trailing space.
func ValidateUser(user string) error {
	return validateName("user", user, MaxUserLen, false)
}

// ValidateApp checks an app name: not empty, at most MaxAppLen characters,
// printable, no leading or trailing space.
func ValidateApp(app string) error {
	return validateName("app", app, MaxAppLen, true)
}

// validateName implements ValidateUser and ValidateApp. max counts runes
// when runes is set, else bytes.
func validateName(what, s string, max int, runes bool) error {
	n := len(s)
	if runes {
		n = utf8.RuneCountInString(s)
	}
	switch {
	case s == "":
		return fmt.Errorf("%s is required", what)
	case n > max:
		return fmt.Errorf("%s is longer than %d characters", what, max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", what)
	case strings.TrimSpace(s) != s:
		return fmt.Errorf("%s %q has leading or trailing space", what, s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s %q contains a non-printable character", what, s)
		}
	}
	return nil
}

// LoadAccounts reads the accounts file at path. A missing file means no
// account has 2FA on and is not an error. Decoding is strict: an unknown key
// is an error. Every error names the file and line ("accounts.toml:7: ...").
func LoadAccounts(path string) (*Accounts, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Accounts{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return ParseAccounts(path, data)
}

// ParseAccounts decodes and validates accounts-file text as if read from
// file (used in errors).
func ParseAccounts(file string, data []byte) (*Accounts, error) {
	var a Accounts
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, decodeError(file, err)
	}
	if err := a.validate(file, data); err != nil {
		return nil, err
	}
	a.Normalize()
	return &a, nil
}

// decodeError turns a go-toml error into "file:line: message".
func decodeError(file string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		errs := make([]error, 0, len(strict.Errors))
		for _, e := range strict.Errors {
			row, _ := e.Position()
			errs = append(errs, fmt.Errorf("%s:%d: unknown key %q", file, row, strings.Join(e.Key(), ".")))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		return fmt.Errorf("%s:%d: %s", file, row, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return fmt.Errorf("%s: %w", file, err)
}

// validate checks what TOML cannot: names present, valid and unique, hashes
// well-formed. lines may be nil (for values not read from a file); then
// errors name only the file.
func (a *Accounts) validate(file string, data []byte) error {
	// The line index is only for wording an error: building it asks the
	// TOML parser for each key's position, which costs a scan from the
	// start of the file per key, so a valid file never pays for it.
	var idx *lineIndex
	lines := func() *lineIndex {
		if idx == nil {
			idx = indexLines(data)
		}
		return idx
	}
	users := map[string]int{} // folded user -> index
	for i, acct := range a.Accounts {
		at := func(line int, format string, args ...any) error {
			if line > 0 {
				return fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...))
			}
			return fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...))
		}
		if err := ValidateUser(acct.User); err != nil {
			return at(lines().accountKey(i, "user"), "account: %v", err)
		}
		key := foldKey(acct.User)
		if j, dup := users[key]; dup {
			return at(lines().account(i), "account %q: user is listed twice (also %s)", acct.User, lines().where(j, -1, a.Accounts[j].User))
		}
		users[key] = i
		if err := acct.validateTOTP(); err != nil {
			return at(lines().accountKey(i, err.key), "account %q: %v", acct.User, err.err)
		}
		if k, key, err := acct.validateAuthenticators(); err != nil {
			line := lines().accountKey(i, key)
			if k >= 0 {
				line = lines().tableKey(i, "authenticator", k, key)
			}
			return at(line, "account %q: %v", acct.User, err)
		}
		apps := map[string]int{}
		for k, pc := range acct.Passcodes {
			if err := ValidateApp(pc.App); err != nil {
				return at(lines().passcodeKey(i, k, "app"), "account %q: passcode: %v", acct.User, err)
			}
			akey := foldKey(pc.App)
			if j, dup := apps[akey]; dup {
				return at(lines().passcode(i, k), "account %q: passcode %q: app name is used twice (also %s)", acct.User, pc.App, lines().where(i, j, acct.Passcodes[j].App))
			}
			apps[akey] = k
			if _, err := parseHash(pc.Hash); err != nil {
				return at(lines().passcodeKey(i, k, "hash"), "account %q: passcode %q: malformed hash: %v", acct.User, pc.App, err)
			}
			if err := ValidateProtocols(pc.Protocols); err != nil {
				return at(lines().passcodeKey(i, k, "protocols"), "account %q: passcode %q: %v", acct.User, pc.App, err)
			}
		}
	}
	return nil
}

// foldKey is userkey.Fold: one account, however its name is cased.
func foldKey(s string) string { return userkey.Fold(s) }

// lineIndex records where each [[account]] and [[account.passcode]] table
// and their keys start, so semantic errors can name a line.
type lineIndex struct {
	accounts []accountLines
}

type accountLines struct {
	header    int
	keys      map[string]int
	passcodes []passcodeLines
	// authenticators are the [[account.authenticator]] tables.
	authenticators []passcodeLines
}

type passcodeLines struct {
	header int
	keys   map[string]int
}

// indexLines walks the document with go-toml's parser. It is called only on
// documents that decoded, so parse errors do not occur; if one does, the
// index is simply shorter and errors fall back to coarser lines.
func indexLines(data []byte) *lineIndex {
	idx := &lineIndex{}
	var p unstable.Parser
	p.Reset(data)
	// ctx: 0 elsewhere, 1 in an [[account]], 2 in an [[account.passcode]],
	// 3 in an [[account.authenticator]].
	ctx := 0
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.ArrayTable, unstable.Table:
			key, line := keyOf(&p, e)
			ctx = 0
			if e.Kind != unstable.ArrayTable {
				continue
			}
			switch key {
			case "account":
				idx.accounts = append(idx.accounts, accountLines{header: line, keys: map[string]int{}})
				ctx = 1
			case "account.passcode":
				if n := len(idx.accounts); n > 0 {
					a := &idx.accounts[n-1]
					a.passcodes = append(a.passcodes, passcodeLines{header: line, keys: map[string]int{}})
					ctx = 2
				}
			case "account.authenticator":
				if n := len(idx.accounts); n > 0 {
					a := &idx.accounts[n-1]
					a.authenticators = append(a.authenticators, passcodeLines{header: line, keys: map[string]int{}})
					ctx = 3
				}
			}
		case unstable.KeyValue:
			key, line := keyOf(&p, e)
			n := len(idx.accounts)
			switch {
			case ctx == 1:
				idx.accounts[n-1].keys[key] = line
			case ctx == 2:
				a := &idx.accounts[n-1]
				a.passcodes[len(a.passcodes)-1].keys[key] = line
			case ctx == 3:
				a := &idx.accounts[n-1]
				a.authenticators[len(a.authenticators)-1].keys[key] = line
			}
		}
	}
	return idx
}

// keyOf returns the dotted key of a table header or key/value and its line.
func keyOf(p *unstable.Parser, e *unstable.Node) (string, int) {
	var parts []string
	line := 0
	it := e.Key()
	for it.Next() {
		n := it.Node()
		if line == 0 {
			line = p.Shape(n.Raw).Start.Line
		}
		parts = append(parts, string(n.Data))
	}
	return strings.Join(parts, "."), line
}

// account returns the line of the i-th [[account]], or 0.
func (x *lineIndex) account(i int) int {
	if x == nil || i >= len(x.accounts) {
		return 0
	}
	return x.accounts[i].header
}

// accountKey returns the line of key in the i-th account, else its header.
func (x *lineIndex) accountKey(i int, key string) int {
	if x == nil || i >= len(x.accounts) {
		return 0
	}
	if l, ok := x.accounts[i].keys[key]; ok {
		return l
	}
	return x.accounts[i].header
}

// passcode returns the line of the k-th passcode of account i, else the
// account's line.
func (x *lineIndex) passcode(i, k int) int {
	if x == nil || i >= len(x.accounts) {
		return 0
	}
	if k >= len(x.accounts[i].passcodes) {
		return x.accounts[i].header
	}
	return x.accounts[i].passcodes[k].header
}

// passcodeKey returns the line of key in passcode k of account i, else the
// passcode's line.
func (x *lineIndex) passcodeKey(i, k int, key string) int {
	if x != nil && i < len(x.accounts) && k < len(x.accounts[i].passcodes) {
		if l, ok := x.accounts[i].passcodes[k].keys[key]; ok {
			return l
		}
	}
	return x.passcode(i, k)
}

// where describes an earlier entry for a duplicate error: "line 3" when
// known, else its name. k < 0 means the account itself.
func (x *lineIndex) where(i, k int, name string) string {
	l := x.account(i)
	if k >= 0 {
		l = x.passcode(i, k)
	}
	if l > 0 {
		return fmt.Sprintf("line %d", l)
	}
	return fmt.Sprintf("%q", name)
}

// tableKey returns the line of key in the k-th [[account.<table>]] of
// account i (table "authenticator"), else that table's line, else the
// account's.
func (x *lineIndex) tableKey(i int, table string, k int, key string) int {
	if x == nil || i >= len(x.accounts) {
		return 0
	}
	var tables []passcodeLines
	if table == "authenticator" {
		tables = x.accounts[i].authenticators
	}
	if k < 0 || k >= len(tables) {
		return x.accounts[i].header
	}
	if l, ok := tables[k].keys[key]; ok {
		return l
	}
	return tables[k].header
}
