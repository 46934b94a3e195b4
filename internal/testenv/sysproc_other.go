//go:build unix && !linux

package testenv

import "syscall"

// sysProcAttr puts the server in a process group of its own. Only Linux
// has a parent-death signal.
func sysProcAttr(syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
