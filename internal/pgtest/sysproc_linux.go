//go:build linux

package pgtest

import "syscall"

// sysProcAttr runs initdb and postgres as cred (nil: the current user), in a
// process group of their own, and asks the kernel to SIGQUIT the postmaster
// (immediate shutdown) if the test binary dies without cleaning up. Go sets
// the parent-death signal after changing the credentials, which would clear
// it.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGQUIT, Credential: cred}
}
