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
	path := PepperPath(stateDir)
	p, err := readPepper(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return p, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("pepper: %w", err)
	}
	if err := createPepper(stateDir, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return readPepper(path)
}

// readPepper reads and checks an existing pepper file.
func readPepper(path string) (Pepper, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pepper: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pepper: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("pepper: %s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, PepperSize+1))
	if err != nil {
		return nil, fmt.Errorf("pepper: %w", err)
	}
	if len(b) != PepperSize {
		return nil, fmt.Errorf("pepper: %s has %d bytes, want %d; refusing to use it (replacing it invalidates every passcode)", path, fi.Size(), PepperSize)
	}
	return Pepper(b), nil
}

// createPepper writes a new pepper to a temporary file (O_EXCL, 0600),
// syncs it and links it to path. It returns an error wrapping fs.ErrExist
// when another process created path first.
func createPepper(dir, path string) error {
	key := make([]byte, PepperSize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("pepper: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".pepper-*.tmp") // O_EXCL, mode 0600
	if err != nil {
		return fmt.Errorf("pepper: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("pepper: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return fmt.Errorf("pepper: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("pepper: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pepper: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("pepper: %w", err)
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
