//go:build unix && !linux

package testenv

import "syscall"

// setDeathSig does nothing: only Linux has a parent-death signal.
func setDeathSig(*syscall.SysProcAttr, syscall.Signal) {}
