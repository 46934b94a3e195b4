//go:build unix && !linux

package redistest

import "syscall"

// sysProcAttr puts redis-server in its own process group, so that Kill also
// reaches a child it forked (to stream a snapshot to a replica).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
