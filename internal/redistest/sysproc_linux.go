//go:build unix

package redistest

import "syscall"

// sysProcAttr puts redis-server in its own process group, so that Kill also
// reaches a child it forked (to stream a snapshot to a replica), and asks the
// kernel to SIGKILL it if the test binary dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
