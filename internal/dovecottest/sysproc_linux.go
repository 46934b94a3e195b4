//go:build unix

package dovecottest

import "syscall"

// sysProcAttr puts Dovecot in its own process group, so that Stop can reach
// every child, and asks the kernel to SIGTERM the master if the test binary
// dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
