//go:build linux

package testenv

import "syscall"

// setDeathSig asks the kernel to send the process deathSig if the test
// binary dies without cleaning up.
func setDeathSig(attr *syscall.SysProcAttr, deathSig syscall.Signal) {
	attr.Pdeathsig = deathSig
}
