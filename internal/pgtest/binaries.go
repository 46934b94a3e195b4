//go:build unix

package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// binary is the PostgreSQL this package runs, 10 or later (SCRAM-SHA-256
// came with 10). Its Name is only for messages: Available finds the
// binaries.
var binary = &testenv.Binary{
	Name:        "postgres",
	Package:     "pgtest",
	Skipping:    "real-PostgreSQL",
	InstallHint: InstallHint,
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	Version: func(out string) (string, error) {
		f := strings.Fields(out)
		if len(f) < 3 || f[1] != "(PostgreSQL)" {
			return "", fmt.Errorf("no version in %q", strings.TrimSpace(out))
		}
		return f[2], nil
	},
	Supported: func(v string) error {
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err != nil || n < minMajor {
			return fmt.Errorf("found PostgreSQL %s, but this package needs %d or later", v, minMajor)
		}
		return nil
	},
}

// Available reports the directory that holds PostgreSQL's initdb and postgres
// binaries, and whether there is one: the highest version's
// /usr/lib/postgresql/VERSION/bin, else the directory of the initdb found in
// PATH (symbolic links resolved), when postgres is next to it (initdb runs the
// postgres of its own directory).
func Available() (binDir string, ok bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[j])), filepath.Base(filepath.Dir(dirs[i])))
	})
	for _, d := range dirs {
		if executable(filepath.Join(d, "initdb")) && executable(filepath.Join(d, "postgres")) {
			return d, true
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", false
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	d, err := filepath.Abs(filepath.Dir(p))
	if err != nil || !executable(filepath.Join(d, "postgres")) {
		return "", false
	}
	return d, true
}

// versionLess orders directory names like "9.6", "15" and "16" by number.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errx := strconv.Atoi(as[i])
		y, erry := strconv.Atoi(bs[i])
		if errx != nil || erry != nil {
			return a < b
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// executable reports whether path is a regular file someone may execute.
func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// binaries returns the directory of supported binaries, or skips (fails
// under CI) the test.
func binaries(t testing.TB) (string, bool) {
	t.Helper()
	dir, ok := Available()
	if !ok {
		binary.Unavailable(t, "initdb and postgres not found in /usr/lib/postgresql/*/bin or PATH; install them with: %s", InstallHint)
		return "", false
	}
	if err := binary.Check(filepath.Join(dir, "postgres")); err != nil {
		binary.Unavailable(t, "%v", err)
		return "", false
	}
	return dir, true
}
