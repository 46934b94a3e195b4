//go:build unix

package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// identity is the user the cluster's processes run as.
type identity struct {
	name     string
	uid, gid int
	cred     *syscall.Credential // nil: the current user
}

// currentIdentity returns the user to run initdb and postgres as: the
// "postgres" system user when running as root, which both refuse to run as,
// else the current user.
func currentIdentity() (identity, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return identity{}, fmt.Errorf("current user: %v", err)
		}
		return identity{name: u.Username, uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return identity{}, fmt.Errorf("running as root, and there is no user postgres to run PostgreSQL as (the postgresql package creates it; install it with: %s)", InstallHint)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || uid == 0 {
		return identity{}, fmt.Errorf("user postgres has uid %s, gid %s; want a non-root numeric one", u.Uid, u.Gid)
	}
	// An empty Groups drops root's supplementary groups.
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	return identity{name: u.Username, uid: uid, gid: gid, cred: cred}, nil
}

// chown gives path to the cluster's user, when that is not the current one.
func (id identity) chown(path string) error {
	if id.cred == nil {
		return nil
	}
	return os.Lchown(path, id.uid, id.gid)
}

// childEnv is the environment of initdb and postgres: this process's,
// without libpq's PG* variables, in the C locale so that messages are in
// English.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "LANGUAGE=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// command returns bin with args, to run as the cluster's user with the
// environment childEnv, killed when ctx ends.
func (s *Server) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, bin), args...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.id.cred}
	return cmd
}
