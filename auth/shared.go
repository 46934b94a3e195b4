package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// SharedAccounts keeps the accounts in a database that several kanmon
// nodes share (package accountsdb), instead of the accounts file. A
// Store opened on it with OpenSharedStore gives the CLI, the portal and
// the server the same Read and Update as on the file.
type SharedAccounts interface {
	// Load returns every account, in the order they were added.
	Load() (*Accounts, error)
	// Update calls fn with the accounts, in one transaction that no
	// other Update (on any node) runs beside, and writes what fn changed
	// if fn returns nil; ErrNoChange from fn writes nothing. validate
	// checks the result before anything is written.
	Update(fn func(*Accounts) error, validate func(*Accounts) error) error
	// Where names the database for messages, without a password.
	Where() string
}

// ErrUnavailable wraps every error of a SharedAccounts that could not
// reach its database: the change (or read) did not happen, and may be
// tried again later.
var ErrUnavailable = errors.New("accounts database unavailable")

// OpenSharedStore returns a Store whose accounts live in db.
func OpenSharedStore(db SharedAccounts) *Store { return &Store{path: db.Where(), shared: db} }

// Shared reports whether the store's accounts live in a shared database.
func (s *Store) Shared() bool { return s.shared != nil }

// readShared is Read on a shared store.
func (s *Store) readShared() (*Accounts, error) {
	a, err := s.shared.Load()
	if err != nil || s.names == nil {
		return a, err
	}
	return a.UnderNames(s.names, s.path)
}

// updateShared is Update on a shared store.
func (s *Store) updateShared(fn func(*Accounts) error) error {
	err := s.shared.Update(func(a *Accounts) error {
		if s.names != nil {
			named, err := a.UnderNames(s.names, s.path)
			if err != nil {
				return err
			}
			*a = *named
		}
		a.Normalize()
		return fn(a)
	}, func(a *Accounts) error { return a.validate(s.path, nil) })
	if errors.Is(err, ErrNoChange) {
		return nil
	}
	return err
}

// Encode writes a as an accounts file, with header (DefaultHeader when
// empty) as its leading comment: the format LoadAccounts reads, for
// "kanmon accounts export".
func (a *Accounts) Encode(header string) []byte {
	if header == "" {
		header = DefaultHeader
	}
	return a.encode(header)
}

// Validate checks a as a loaded accounts file is checked (names, apps,
// hashes, duplicates), naming where in its messages.
func (a *Accounts) Validate(where string) error { return a.validate(where, nil) }

// keyCheckLabel is what a key check value is the HMAC of.
const keyCheckLabel = "kanmon key check v1"

// KeyCheckValues returns a keyed check value (HMAC-SHA256 of a fixed
// label, hex) of each key file of stateDir, by file name: the pepper and
// the TOTP key, each created if missing. A shared accounts database
// stores them, so that a node whose keys differ from the cluster's
// refuses to start; the values reveal nothing of the keys.
func KeyCheckValues(stateDir string) (map[string]string, error) {
	out := map[string]string{}
	for _, k := range []keyFile{pepperKeyFile(), totpKeyFile()} {
		key, err := k.loadOrCreate(stateDir)
		if err != nil {
			return nil, err
		}
		m := hmac.New(sha256.New, key)
		m.Write([]byte(keyCheckLabel))
		out[k.name] = hex.EncodeToString(m.Sum(nil))
	}
	return out, nil
}
