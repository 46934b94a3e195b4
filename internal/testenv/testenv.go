//go:build unix

// Package testenv is what the packages that run a real server for tests
// (internal/dovecottest, internal/haproxytest, internal/pgtest,
// internal/redistest) have in common: finding the server's binary and
// checking its version, skipping the test when it is missing (failing it
// under CI, so that CI cannot pass by skipping), a short instance directory
// (MakeDir), free loopback ports, retrying a start that lost a port to
// another process, the server's log files (Logs) and printing them once
// when the test has failed (FailureLog), and running the server in a
// process group of its own (Runner, Process), as another user if need be.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// InCI reports whether the environment says this is a CI run: CI is "true",
// "1" or "yes" (in any case).
func InCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// Binary is a server program that a test package runs, and how that
// package speaks of it when it is missing.
type Binary struct {
	// Name is the program's file name, e.g. "dovecot".
	Name string
	// Dirs are where Find looks after PATH, e.g. /usr/sbin, which is often
	// missing from an ordinary user's PATH.
	Dirs []string
	// Package prefixes every message, e.g. "dovecottest".
	Package string
	// Skipping names the tests skipped, as in "skipping real-Dovecot
	// test".
	Skipping string
	// InstallHint is the command that installs the program.
	InstallHint string
	// VersionArgs are the arguments that make the program print its
	// version. Default: "--version".
	VersionArgs []string
	// Version makes the version out of the output of the program run with
	// VersionArgs. Default: the output without surrounding white space.
	Version func(out string) (string, error)
	// Supported returns an error (the reason to skip) when the package
	// cannot run this version. Default: every version is.
	Supported func(version string) error

	mu       sync.Mutex
	versions map[string]string // by path
}

// Find returns the path of the binary and whether there is one: the first
// Name in PATH, else the first regular, executable file Name in Dirs.
func (b *Binary) Find() (path string, ok bool) {
	if p, err := exec.LookPath(b.Name); err == nil {
		return p, true
	}
	for _, dir := range b.Dirs {
		p := filepath.Join(dir, b.Name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// Require returns the path of a binary of a supported version. Without
// one it skips the test (fails it under CI) and returns false, which only a
// test standing in for testing.TB gets to see.
func (b *Binary) Require(t testing.TB) (path string, ok bool) {
	t.Helper()
	bin, ok := b.Find()
	if !ok {
		b.Unavailable(t, "%s not found in PATH or %s; install it with: %s", b.Name, strings.Join(b.Dirs, ", "), b.InstallHint)
		return "", false
	}
	if err := b.Check(bin); err != nil {
		b.Unavailable(t, "%v", err)
		return "", false
	}
	return bin, true
}

// Check returns nil when the binary at path (found by Find, or elsewhere by
// a package that looks for it in its own way) is of a supported version,
// else the reason to skip.
func (b *Binary) Check(path string) error {
	v, err := b.VersionOf(path)
	if err != nil {
		return err
	}
	if b.Supported == nil {
		return nil
	}
	return b.Supported(v)
}

// VersionOf runs the binary at path with VersionArgs, once per path, and
// returns what Version makes of the output.
func (b *Binary) VersionOf(path string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.versions[path]; ok {
		return v, nil
	}
	args := b.VersionArgs
	if len(args) == 0 {
		args = []string{"--version"}
	}
	out, err := exec.Command(path, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", path, strings.Join(args, " "), err)
	}
	v := strings.TrimSpace(string(out))
	if b.Version != nil {
		if v, err = b.Version(string(out)); err != nil {
			return "", fmt.Errorf("%s %s: %v", path, strings.Join(args, " "), err)
		}
	}
	if b.versions == nil {
		b.versions = map[string]string{}
	}
	b.versions[path] = v
	return v, nil
}

// Unavailable skips the test because the server cannot run, or fails it
// when InCI.
func (b *Binary) Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s: %s (CI=true, so this is a failure, not a skip)", b.Package, msg)
		return
	}
	t.Skipf("%s: %s; skipping %s test", b.Package, msg, b.Skipping)
}

// recorder stands in for a test to see whether Unavailable skips or fails.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recorder) Skipf(format string, a ...any)  { r.skip = fmt.Sprintf(format, a...) }

// CheckUnavailable is a test of b.Unavailable for a package's own tests:
// without CI it must skip, with CI=true fail, both times with a message that
// names b.InstallHint. It sets CI, so the test must not be parallel.
func CheckUnavailable(t *testing.T, b *Binary) {
	t.Helper()
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	b.Unavailable(r, "%s not found; install it with: %s", b.Name, b.InstallHint)
	if r.fatal != "" || !strings.Contains(r.skip, b.InstallHint) {
		t.Errorf("without CI: fatal %q, skip %q; want a skip naming %q", r.fatal, r.skip, b.InstallHint)
	}
	t.Setenv("CI", "true")
	r = &recorder{TB: t}
	b.Unavailable(r, "%s not found; install it with: %s", b.Name, b.InstallHint)
	if r.skip != "" || !strings.Contains(r.fatal, b.InstallHint) {
		t.Errorf("with CI=true: fatal %q, skip %q; want a failure", r.fatal, r.skip)
	}
}
