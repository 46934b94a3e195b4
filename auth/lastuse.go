package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// LastUseDBName is the last-use database's file name in state_dir. It is
// a bbolt file of its own, apart from the lockout database, so that the
// CLI can read it while no server runs, and so that neither store's
// internals depend on the other's.
const LastUseDBName = "lastuse.db"

// DefaultLastUseFlush is how long a recorded use may wait in memory before
// it is written: at most one write transaction per interval, however busy
// the server.
const DefaultLastUseFlush = time.Second

// lastUseBucket holds one JSON LastUse per passcode ID.
var lastUseBucket = []byte("passcode_last_use")

// boltTimeout bounds the wait for bbolt's file lock: a second process that
// holds it is a running server, not something to wait for.
const boltTimeout = time.Second

// LastUse is when, from where and how an app passcode last logged in.
type LastUse struct {
	// User and App name the passcode as it was spelled when used.
	User string `json:"user"`
	App  string `json:"app"`
	// Time is when the login succeeded.
	Time time.Time `json:"time"`
	// ClientIP is the client's address.
	ClientIP string `json:"client_ip"`
	// Protocol is imap, pop3 or submission.
	Protocol string `json:"protocol"`
	// Client is the client's name and version from IMAP ID, if it sent
	// one before logging in.
	Client string `json:"client,omitempty"`
}

// LastUseKeeper is where the server notes each passcode login and where
// the admin socket and the portal read the passcodes' last use: a
// LastUseStore (one node: bbolt in state_dir) or redisstate.LastUse
// (several nodes sharing it in Redis). Record must never block a login on
// a disk or the network: implementations buffer and write in batches.
type LastUseKeeper interface {
	// Record notes a use of the passcode with the given ID
	// (AppPasscode.ID).
	Record(id string, u LastUse)
	// All returns every record known, the pending ones included, by
	// passcode ID.
	All() (map[string]LastUse, error)
	// Retain drops the records of passcodes whose ID is not in keep
	// (they were revoked), so the records do not grow with every
	// passcode ever made.
	Retain(keep map[string]bool) error
}

var _ LastUseKeeper = (*LastUseStore)(nil)

// LastUseStore keeps the last use of every passcode (by AppPasscode.ID)
// in a bbolt file that the server holds open exclusively. Record only
// touches memory; the records are written in batches, at most one
// transaction per flush interval. Safe for concurrent use.
type LastUseStore struct {
	db    *bolt.DB
	every time.Duration

	mu      sync.Mutex
	pending map[string]LastUse
	timer   *time.Timer // armed while pending is not empty
	closed  bool
	err     error // the last flush error, reported by Close

	clients *ClientStore // made by Clients, flushed by Close
}

// OpenLastUse opens (creating it and its directory if needed) the last-use
// database at path. flushEvery ≤ 0 means DefaultLastUseFlush.
func OpenLastUse(path string, flushEvery time.Duration) (*LastUseStore, error) {
	if flushEvery <= 0 {
		flushEvery = DefaultLastUseFlush
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("last-use database: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltTimeout})
	if err != nil {
		return nil, fmt.Errorf("last-use database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(lastUseBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("last-use database %s: %w", path, err)
	}
	return &LastUseStore{db: db, every: flushEvery, pending: map[string]LastUse{}}, nil
}

// Record notes a use of the passcode with the given ID. It never blocks
// on the disk.
func (s *LastUseStore) Record(id string, u LastUse) {
	if s == nil || id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.pending[id] = u
	if s.timer == nil {
		s.timer = time.AfterFunc(s.every, func() { _ = s.Flush() })
	}
}

// Flush writes the pending records now.
func (s *LastUseStore) Flush() error {
	s.mu.Lock()
	batch := s.pending
	s.pending = map[string]LastUse{}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(lastUseBucket)
		for id, u := range batch {
			data, err := json.Marshal(u)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("last-use database: %w", err)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	return err
}

// All returns every record, the pending ones included, by passcode ID.
func (s *LastUseStore) All() (map[string]LastUse, error) {
	out, err := readLastUse(s.db)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	maps.Copy(out, s.pending)
	s.mu.Unlock()
	return out, nil
}

// Retain deletes the records of passcodes whose ID is not in keep (they
// were revoked), so the file does not grow with every passcode ever made.
func (s *LastUseStore) Retain(keep map[string]bool) error {
	s.mu.Lock()
	for id := range s.pending {
		if !keep[id] {
			delete(s.pending, id)
		}
	}
	s.mu.Unlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(lastUseBucket)
		var drop [][]byte
		err := b.ForEach(func(k, _ []byte) error {
			if !keep[string(k)] {
				drop = append(drop, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close writes what is pending and closes the file. It returns the first
// error of the final flush, else of an earlier one.
func (s *LastUseStore) Close() error {
	ferr := s.Flush()
	s.mu.Lock()
	s.closed = true
	if ferr == nil {
		ferr = s.err
	}
	clients := s.clients
	s.mu.Unlock()
	var cerr error
	if clients != nil {
		cerr = clients.close()
	}
	return errors.Join(ferr, cerr, s.db.Close())
}

// ReadLastUse reads the database at path read-only, for the CLI while no
// server runs (a running server holds the file's lock; ask it instead). A
// missing file means no passcode was used yet.
func ReadLastUse(path string) (map[string]LastUse, error) {
	out := map[string]LastUse{}
	err := viewReadOnly(path, func(db *bolt.DB) error {
		var err error
		out, err = readLastUse(db)
		return err
	})
	return out, err
}

func readLastUse(db *bolt.DB) (map[string]LastUse, error) {
	out := map[string]LastUse{}
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(lastUseBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var u LastUse
			if err := json.Unmarshal(v, &u); err != nil {
				return nil // one bad record hides only itself
			}
			out[string(k)] = u
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("last-use database: %w", err)
	}
	return out, nil
}
