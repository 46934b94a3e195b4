//go:build unix && !linux

package main

import "syscall"

// serveProcAttr puts kanmon serve in a process group of its own. Only
// Linux can also kill it when the bench dies; the bench measures on Linux.
func serveProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// raiseNoFile leaves RLIMIT_NOFILE alone off Linux (its field types differ
// by platform) and reports 0, "not raised".
func raiseNoFile(uint64) uint64 { return 0 }
