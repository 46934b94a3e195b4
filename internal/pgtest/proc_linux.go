//go:build linux

package pgtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// serverProcs returns the live processes whose working directory is
// dataDir: those of a PostgreSQL server on it. Zombies and other users'
// processes (unless running as root) have no readable cwd and are left out.
func serverProcs(dataDir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == dataDir {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeShm removes the System V shared memory segment that postmaster.pid in
// dataDir names, when no process is attached to it any more: a postmaster
// killed with SIGKILL leaves it behind (the next postmaster on dataDir would
// remove it; nothing else does).
func removeShm(dataDir string) {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	// Line 7 is "KEY SHMID" (LOCK_FILE_LINE_SHMEM_KEY).
	lines := strings.Split(string(data), "\n")
	if len(lines) < 7 {
		return
	}
	f := strings.Fields(lines[6])
	if len(f) != 2 {
		return
	}
	key, err1 := strconv.ParseUint(f[0], 10, 32)
	id, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return
	}
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return
	}
	if uint32(d.Perm.Key) != uint32(key) || d.Nattch != 0 {
		return
	}
	unix.SysvShmCtl(id, unix.IPC_RMID, nil)
}
