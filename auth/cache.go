package auth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/kanmon-mail/kanmon/username"
)

// fileIdentity tells one version of a file from another without reading
// it: every writer of the accounts file replaces it by rename (a new
// inode), and an editor that rewrites it in place changes its size or
// its modification time.
type fileIdentity struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

// identityOf returns fi's identity.
func identityOf(fi fs.FileInfo) fileIdentity {
	id := fileIdentity{size: fi.Size(), mtime: fi.ModTime()}
	id.dev, id.ino = fileInode(fi)
	return id
}

// accountsCache keeps the last parse of the accounts file and the
// identity of the file it came from.
type accountsCache struct {
	mu     sync.Mutex
	id     fileIdentity
	exists bool
	accts  *Accounts
	// canon is accts (canonOf) under canonNames, kept for the next read
	// with the same parse and names.
	canonOf    *Accounts
	canonNames *username.Policy
	canon      *Accounts
}

// read returns the parse of the file at path (see parse), under names
// when they are given, itself cached for the same parse and names.
func (c *accountsCache) read(path string, names *username.Policy) (*Accounts, error) {
	a, err := c.parse(path)
	if err != nil || names == nil || len(a.Accounts) == 0 {
		return a, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canonOf == a && c.canonNames == names {
		return c.canon, nil
	}
	canon, err := a.UnderNames(names, path)
	if err != nil {
		return nil, err
	}
	c.canonOf, c.canonNames, c.canon = a, names, canon
	return canon, nil
}

// parse returns the parse of the file at path, parsing it again only when
// the file changed since the last call. The identity is taken from the
// open file, so the text and the identity always belong together.
func (c *accountsCache) parse(path string) (*Accounts, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.accts, c.exists = nil, false
		return &Accounts{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	id := identityOf(fi)
	if c.accts != nil && c.exists && c.id == id {
		return c.accts, nil
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	a, err := ParseAccounts(path, data)
	if err != nil {
		c.accts = nil
		return nil, err
	}
	c.id, c.exists, c.accts = id, true, a
	return a, nil
}

// OpenCachedStore is OpenStore for a long-lived reader such as the
// portal: its Read parses the accounts file again only when the file has
// changed (another inode, size or modification time), so reading an
// account per web request costs a stat, not a parse of a file that may
// hold 50,000 accounts. The *Accounts that Read returns is shared between
// callers and must not be modified. Update is unchanged: it always
// re-reads the file under the lock.
func OpenCachedStore(path string) *Store { return &Store{path: path, cache: &accountsCache{}} }
