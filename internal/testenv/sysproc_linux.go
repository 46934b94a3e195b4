//go:build unix

package testenv

import "syscall"

// sysProcAttr puts the server in a process group of its own and asks the
// kernel to send it deathSig if the test binary dies without cleaning up.
func sysProcAttr(deathSig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
}
