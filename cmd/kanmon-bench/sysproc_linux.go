//go:build unix

package main

import "syscall"

// serveProcAttr puts kanmon serve in a process group of its own, killed
// when the bench dies (Pdeathsig), so no server outlives a run.
func serveProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// raiseNoFile raises RLIMIT_NOFILE's soft limit to want, raising the hard
// limit too where allowed (root), and returns the soft limit in force.
// Children (Dovecot, kanmon) inherit it.
func raiseNoFile(want uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur >= want {
		return lim.Cur
	}
	if lim.Max < want {
		try := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return want
		}
		want = lim.Max
	}
	lim.Cur = want
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}
