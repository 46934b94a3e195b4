package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/username"
)

// DefaultHeader is the comment at the top of a new accounts file. An
// existing file's leading comment block is kept instead.
const DefaultHeader = "# kanmon accounts: every account listed here has two-factor authentication on.\n"

// ErrNoChange may be returned by an Update callback that decided there is
// nothing to change; Update then returns nil without writing.
var ErrNoChange = errors.New("no change")

// Store reads and rewrites the accounts file for the CLI. Updates are
// serialized across goroutines and processes by an flock(2) on path+".lock"
// and written atomically, so a running server that re-reads the file sees
// either the old or the new version, never a mix.
type Store struct {
	path string
	// cache, set by OpenCachedStore, makes Read parse only a changed file.
	cache *accountsCache
	// names, set by WithNames, folds user names to canonical accounts.
	names *username.Policy
	// shared, set by OpenSharedStore, keeps the accounts in a database
	// instead of the file at path (then path names the database).
	shared SharedAccounts
}

// WithNames returns a store for the same file (sharing its cache) that
// keys accounts on their canonical names under names ([users]): Read
// gives every account its canonical name, Update writes canonical names
// back, and the functions that take a user name take any spelling of it.
// A file with two accounts that fold to one is an error to both.
func (s *Store) WithNames(names *username.Policy) *Store {
	c := *s
	c.names = names
	return &c
}

// Canonical is the account name for user as typed, under the store's
// names; user itself on a store without names.
func (s *Store) Canonical(user string) (string, error) {
	if s.names == nil {
		return user, nil
	}
	c, err := s.names.Canonical(user)
	if err != nil {
		return "", fmt.Errorf("user %q: %w", user, err)
	}
	return c, nil
}

// OpenStore returns a Store for the accounts file at path. Nothing is opened
// until Read or Update.
func OpenStore(path string) *Store { return &Store{path: path} }

// Path returns the accounts file's path (a shared store: the database's
// name, for messages).
func (s *Store) Path() string { return s.path }

// Read loads the accounts file, as LoadAccounts; from a cached store
// (OpenCachedStore), a shared parse that must not be modified.
func (s *Store) Read() (*Accounts, error) {
	if s.shared != nil {
		return s.readShared()
	}
	if s.cache != nil {
		return s.cache.read(s.path, s.names)
	}
	a, err := LoadAccounts(s.path)
	if err != nil || s.names == nil {
		return a, err
	}
	return a.UnderNames(s.names, s.path)
}

// Update takes the store's exclusive lock, re-reads the file, calls fn with
// its contents and, if fn returns nil and the result validates, replaces the
// file atomically (temporary file in the same directory, fsync, rename,
// fsync of the directory) with mode 0600, keeping the file's leading comment
// block and its owner. If fn returns an error nothing is written and the
// error is returned, except ErrNoChange, for which Update returns nil.
func (s *Store) Update(fn func(*Accounts) error) error {
	if s.shared != nil {
		return s.updateShared(fn)
	}
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()

	data, err := os.ReadFile(s.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("accounts: %w", err)
	}
	a := &Accounts{}
	if data != nil {
		if a, err = ParseAccounts(s.path, data); err != nil {
			return err
		}
		if s.names != nil {
			if a, err = a.UnderNames(s.names, s.path); err != nil {
				return err
			}
		}
	}
	if err := fn(a); err != nil {
		if errors.Is(err, ErrNoChange) {
			return nil
		}
		return err
	}
	if err := a.validate(s.path, nil); err != nil {
		return err
	}
	return writeAtomic(s.path, a.encode(leadingComments(data)))
}

// writeAtomic replaces path with data: mode 0600, owner kept if the file
// existed.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return fmt.Errorf("accounts: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if fi, err := os.Stat(path); err == nil {
		// An admin running the CLI as root must not leave the file owned
		// by root, unreadable by the server.
		if uid, gid, ok := fileOwner(fi); ok && (uid != os.Geteuid() || gid != os.Getegid()) {
			if err := tmp.Chown(uid, gid); err != nil {
				return fail(fmt.Errorf("keep owner %d:%d: %w", uid, gid, err))
			}
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("accounts: write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("accounts: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	return nil
}

// leadingComments returns the comment block at the top of data (comment
// and blank lines before the first other line, trailing blank lines
// dropped), or DefaultHeader if there is none.
func leadingComments(data []byte) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(data), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			break
		}
		b.WriteString(line)
	}
	h := strings.TrimRight(b.String(), " \t\r\n")
	if h == "" {
		return DefaultHeader
	}
	return h + "\n"
}

// encode writes the accounts file in its documented layout:
//
//	# header
//	[[account]]
//	user = "alice"
//	enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on
//	one_time_codes = [                    # hashes of the unused one-time codes
//	  "hmac-sha256$...$...",
//	]
//
//	[[account.authenticator]]             # up to MaxAuthenticators
//	name = "iPhone"
//	added = 2026-11-25T12:00:00Z
//	totp = "aes-256-gcm$...$..."          # its secret, sealed
//
//	[[account.passcode]]
//	app = "Thunderbird"
//	created = 2026-11-25T12:01:00Z
//	hash = "hmac-sha256$...$..."
//	protocols = ["imap", "submission"]   # only when the passcode is scoped
func (a *Accounts) encode(header string) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for i, acct := range a.Accounts {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[[account]]\nuser = %s\nenabled = %s        # when 2FA was turned on\n", quoteTOML(acct.User), formatTime(acct.Enabled))
		if len(acct.OneTimeCodes) > 0 {
			b.WriteString("one_time_codes = [                    # hashes of the unused one-time codes\n")
			for _, h := range acct.OneTimeCodes {
				fmt.Fprintf(&b, "  %s,\n", quoteTOML(h))
			}
			b.WriteString("]\n")
		}
		for _, au := range acct.AllAuthenticators() {
			fmt.Fprintf(&b, "\n[[account.authenticator]]\nname = %s\nadded = %s\ntotp = %s  # its secret, sealed with state_dir/%s\n",
				quoteTOML(au.Name), formatTime(au.Added), quoteTOML(au.TOTP), TOTPKeyFileName)
		}
		for _, pc := range acct.Passcodes {
			fmt.Fprintf(&b, "\n[[account.passcode]]\napp = %s\ncreated = %s\nhash = %s\n", quoteTOML(pc.App), formatTime(pc.Created), quoteTOML(pc.Hash))
			if len(pc.Protocols) > 0 {
				quoted := make([]string, len(pc.Protocols))
				for i, p := range pc.Protocols {
					quoted[i] = quoteTOML(p)
				}
				fmt.Fprintf(&b, "protocols = [%s]\n", strings.Join(quoted, ", "))
			}
		}
	}
	return b.Bytes()
}

// formatTime writes an RFC 3339 offset date-time in UTC.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// quoteTOML writes s as a TOML basic string.
func quoteTOML(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
