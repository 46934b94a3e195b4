//go:build unix && !linux

package haproxytest

import "syscall"

// sysProcAttr puts haproxy in its own process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
