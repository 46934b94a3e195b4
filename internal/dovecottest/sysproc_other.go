//go:build unix && !linux

package dovecottest

import "syscall"

// sysProcAttr puts Dovecot in its own process group, so that Stop can reach
// every child.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
