package main

import "syscall"

// serveProcAttr puts kanmon serve in a process group of its own, killed
// when the bench dies (Pdeathsig), so no server outlives a run.
func serveProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
