//go:build unix && !linux

package pgtest

import "syscall"

// sysProcAttr runs initdb and postgres as cred (nil: the current user), in a
// process group of their own. Only Linux has a parent-death signal.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}
