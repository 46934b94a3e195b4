//go:build !linux && !windows

package main

import "syscall"

// serveProcAttr puts kanmon serve in a process group of its own. Only
// Linux can also kill it when the bench dies; the bench measures on Linux.
func serveProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
