//go:build unix && !linux

package pgtest

// serverProcs would list the processes of the server on dataDir; without
// /proc it knows none, so Kill kills the postmaster only, and its children
// exit by themselves once they notice.
func serverProcs(dataDir string) []int { return nil }

// removeShm does nothing outside Linux: a postmaster killed with SIGKILL
// and not started again leaves its small System V segment behind.
func removeShm(dataDir string) {}
