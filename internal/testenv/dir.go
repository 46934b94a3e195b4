//go:build unix

package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// MakeDir creates a directory "PKG-*" for a server's files, mode 0700, and
// removes it at the end of the test unless the environment variable
// PKG_KEEP (pkg upper-cased, e.g. PGTEST_KEEP) is set; then it logs that it
// kept it. Registered before the server's own cleanup, the removal runs
// after it.
//
// It is not t.TempDir, whose path is named after the test: the path stays
// short, for the Unix sockets a server may make in it (a socket's path is
// limited to about 100 bytes). With others, for a server that runs as
// another user, every directory above it must be searchable by other users,
// which t.TempDir's 0700 parent is not; MakeDir fails when that cannot be
// had. Symbolic links in the path are resolved.
func MakeDir(t testing.TB, pkg string, others bool) (string, error) {
	base := os.TempDir()
	if len(base) > 40 || (others && !Searchable(base)) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, pkg+"-")
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	if others && !Searchable(filepath.Dir(dir)) {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%s: a parent directory is not searchable by other users, which the server's user needs", dir)
	}
	keep := strings.ToUpper(pkg) + "_KEEP"
	t.Cleanup(func() {
		if os.Getenv(keep) != "" {
			t.Logf("%s: keeping %s (%s is set)", pkg, dir, keep)
			return
		}
		os.RemoveAll(dir)
	})
	return dir, nil
}

// Searchable reports whether others may traverse dir and all its
// parents: a server run as another user needs that to reach its files.
func Searchable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}
