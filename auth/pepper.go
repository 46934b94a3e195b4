package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// PepperSize is the length in bytes of the pepper.
const PepperSize = 32

// PepperFileName is the pepper's file name inside the state directory.
const PepperFileName = "pepper"

// Pepper is the secret HMAC key that passcode hashes are made with. It lives
// in the state directory, not in the accounts file, so a leaked accounts
// file alone does not allow offline guessing. Losing it invalidates every
// passcode. It formats as a placeholder with %v, %s and %x, so it does not
// end up in logs by accident.
type Pepper []byte

// String returns a placeholder, never the key.
func (Pepper) String() string { return "auth.Pepper(redacted)" }

// GoString returns a placeholder, never the key.
func (Pepper) GoString() string { return "auth.Pepper(redacted)" }

// PepperPath returns the path of the pepper file in stateDir.
func PepperPath(stateDir string) string { return filepath.Join(stateDir, PepperFileName) }

// LoadOrCreatePepper reads stateDir/pepper, creating stateDir (mode 0700) and
// the file (PepperSize random bytes, mode 0600) on first use. The file is
// written under a temporary name and then hard-linked into place, which
// fails if the name exists, so it appears complete or not at all: when two
// processes race, the loser reads the winner's file. A pepper file of the
// wrong size is an error.
func LoadOrCreatePepper(stateDir string) (Pepper, error) {
	b, err := pepperKeyFile().loadOrCreate(stateDir)
	return Pepper(b), err
}

// pepperKeyFile describes the pepper file for the key-file helpers.
func pepperKeyFile() keyFile {
	return keyFile{name: PepperFileName, what: "pepper", loss: "every passcode and one-time code"}
}

// keyFile is a file of keySize random bytes in the state directory: the
// pepper, or the key that seals TOTP secrets.
type keyFile struct {
	name string // file name in the state directory
	what string // prefix of every error ("pepper")
	loss string // what replacing the file invalidates, for the wrong-size error
}

// keySize is the length in bytes of every key file (PepperSize).
const keySize = PepperSize

// loadOrCreate reads the key file in stateDir, creating stateDir (mode
// 0700) and the file (mode 0600) on first use, as LoadOrCreatePepper
// describes.
func (k keyFile) loadOrCreate(stateDir string) ([]byte, error) {
	path := filepath.Join(stateDir, k.name)
	b, err := k.read(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", k.what, err)
	}
	if err := k.create(stateDir, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return k.read(path)
}

// load reads the existing key file in stateDir; a missing file is an error
// wrapping fs.ErrNotExist.
func (k keyFile) load(stateDir string) ([]byte, error) {
	return k.read(filepath.Join(stateDir, k.name))
}

// keyInUse reads k from stateDir for a write to the accounts file. While
// nothing in the file depends on the key (inUse false) it is created if
// missing, as on first use. Once something does, a missing key is an
// error that says how to repair it: a new key would silently make every
// existing sealed secret or hash unusable.
func keyInUse(k keyFile, stateDir string, inUse bool) ([]byte, error) {
	if !inUse {
		return k.loadOrCreate(stateDir)
	}
	b, err := k.load(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w; a new one would invalidate %s in the accounts file: restore it from a backup, or reset those accounts with kanmon 2fa disable", err, k.loss)
	}
	return b, err
}

// read reads and checks an existing key file.
func (k keyFile) read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s is not a regular file", k.what, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, keySize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.what, err)
	}
	if len(b) != keySize {
		return nil, fmt.Errorf("%s: %s has %d bytes, want %d; refusing to use it (replacing it invalidates %s)", k.what, path, fi.Size(), keySize, k.loss)
	}
	return b, nil
}

// create writes a new key to a temporary file (O_EXCL, 0600), syncs it
// and links it to path. It returns an error wrapping fs.ErrExist when
// another process created path first.
func (k keyFile) create(dir, path string) error {
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("%s: %w", k.what, err)
	}
	tmp, err := os.CreateTemp(dir, "."+k.name+"-*.tmp") // O_EXCL, mode 0600
	if err != nil {
		return fmt.Errorf("%s: %w", k.what, err)
	}
	defer os.Remove(tmp.Name())
	fail := func(err error) error {
		tmp.Close()
		return fmt.Errorf("%s: %w", k.what, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(key); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", k.what, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("%s: %w", k.what, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so a new or renamed entry survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
