//go:build linux

package haproxytest

import "syscall"

// sysProcAttr puts haproxy in its own process group and asks the kernel to
// SIGKILL it if the test binary dies without cleaning up. (The tests run
// it without "user haproxy", which would drop the parent-death signal.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
