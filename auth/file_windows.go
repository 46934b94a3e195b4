//go:build windows

package auth

import (
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

// lockFile takes an exclusive lock on path, creating it if needed. Windows
// has no flock; LockFileEx on the whole file gives the same exclusion
// between processes and between goroutines with their own handles.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("accounts lock: %w", err)
	}
	h := windows.Handle(f.Fd())
	var whole windows.Overlapped
	if err := windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK, 0, ^uint32(0), ^uint32(0), &whole); err != nil {
		f.Close()
		return nil, fmt.Errorf("accounts lock %s: %w", path, err)
	}
	return func() {
		_ = windows.UnlockFileEx(h, 0, ^uint32(0), ^uint32(0), &whole)
		f.Close()
	}, nil
}

// fileOwner reports no owner: Windows files have ACLs, not a uid and gid,
// and a rewrite there keeps the directory's inherited ACL.
func fileOwner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// fileInode reports no inode; the cache then tells files apart by size and
// modification time alone.
func fileInode(fs.FileInfo) (dev, ino uint64) { return 0, 0 }
