package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// clientsBucket holds one JSON []PasswordClient per account and kind,
// under "<kind>\x00<ClientUserKey>".
var clientsBucket = []byte("password_clients")

var _ ClientKeeper = (*ClientStore)(nil)

// ClientStore is the ClientKeeper of one node: the records live in the
// last-use database (LastUseDBName), in a bucket of their own. Seen and
// Forget only touch memory; the changes are written in batches, at most
// one transaction per flush interval. Safe for concurrent use.
type ClientStore struct {
	db    *bolt.DB
	every time.Duration
	buf   *ClientBuffer
	now   func() time.Time

	// flushMu makes one flush at a time, and keeps a read from seeing a
	// change neither in the file nor in the buffer (mid-flush).
	flushMu sync.Mutex

	mu     sync.Mutex
	timer  *time.Timer // armed while changes wait
	closed bool
	err    error // the last flush error, reported by Close
}

// Clients returns the store of password-using clients that shares this
// last-use database; it is flushed by Close.
func (s *LastUseStore) Clients() *ClientStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients == nil {
		s.clients = &ClientStore{db: s.db, every: s.every, buf: NewClientBuffer(0), now: time.Now}
	}
	return s.clients
}

// clientKey is the bucket key of slot.
func clientKey(slot ClientSlot) []byte {
	return []byte(slot.Kind.String() + "\x00" + slot.User)
}

// parseClientKey is clientKey's inverse; ok is false for a foreign key.
func parseClientKey(k []byte) (ClientSlot, bool) {
	kind, user, ok := strings.Cut(string(k), "\x00")
	switch {
	case !ok:
		return ClientSlot{}, false
	case kind == ClientRefused.String():
		return ClientSlot{ClientRefused, user}, true
	case kind == ClientPassword.String():
		return ClientSlot{ClientPassword, user}, true
	}
	return ClientSlot{}, false
}

// Seen notes a login of c for user. It never blocks on the disk.
func (s *ClientStore) Seen(kind ClientKind, user string, c PasswordClient) {
	if s == nil || s.isClosed() {
		return
	}
	if s.buf.Seen(kind, user, c, s.now()) {
		s.arm()
	}
}

// Forget drops user's refused rows that match c, at the next write.
func (s *ClientStore) Forget(user string, c PasswordClient) {
	if s == nil || s.isClosed() {
		return
	}
	if s.buf.Forget(user, c) {
		s.arm()
	}
}

// isClosed reports whether Close ran: changes are not taken then.
func (s *ClientStore) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// arm schedules a flush unless one is due already.
func (s *ClientStore) arm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil && !s.closed {
		s.timer = time.AfterFunc(s.every, func() { _ = s.Flush() })
	}
}

// Flush writes the waiting changes now, in one transaction.
func (s *ClientStore) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.mu.Unlock()
	batch := s.buf.Take()
	if len(batch) == 0 {
		return nil
	}
	now := s.now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(clientsBucket)
		if err != nil {
			return err
		}
		for slot, p := range batch {
			key := clientKey(slot)
			list := p.Apply(decodeClients(b.Get(key)), now)
			if len(list) == 0 {
				if err := b.Delete(key); err != nil {
					return err
				}
				continue
			}
			data, err := json.Marshal(list)
			if err != nil {
				return err
			}
			if err := b.Put(key, data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.buf.PutBack(batch, now)
		err = fmt.Errorf("password clients: %w", err)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		s.arm() // try again at the next interval
	}
	return err
}

// Clients returns user's record of kind, most recent first, the changes
// not yet written included.
func (s *ClientStore) Clients(kind ClientKind, user string) ([]PasswordClient, error) {
	slot := ClientSlot{kind, ClientUserKey(user)}
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	var list []PasswordClient
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(clientsBucket); b != nil {
			list = decodeClients(b.Get(clientKey(slot)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("password clients: %w", err)
	}
	now := s.now()
	if p, ok := s.buf.Peek(slot); ok {
		return p.Apply(list, now), nil
	}
	return trimClients(list, now), nil
}

// Accounts returns the records of kind with a client seen since since,
// by ClientUserKey, the changes not yet written included.
func (s *ClientStore) Accounts(kind ClientKind, since time.Time) (map[string][]PasswordClient, error) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	all, err := readClientAccounts(s.db, kind)
	if err != nil {
		return nil, err
	}
	now := s.now()
	for _, slot := range s.buf.Slots(kind) {
		if p, ok := s.buf.Peek(slot); ok {
			all[slot.User] = p.Apply(all[slot.User], now)
		}
	}
	return recentAccounts(all, since, now), nil
}

// close flushes what waits and stops taking changes; LastUseStore.Close
// calls it before closing the database.
func (s *ClientStore) close() error {
	err := s.Flush()
	s.mu.Lock()
	s.closed = true
	if err == nil {
		err = s.err
	}
	s.mu.Unlock()
	return err
}

// readClientAccounts reads every record of kind, by ClientUserKey.
func readClientAccounts(db *bolt.DB, kind ClientKind) (map[string][]PasswordClient, error) {
	out := map[string][]PasswordClient{}
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(clientsBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if slot, ok := parseClientKey(k); ok && slot.Kind == kind {
				out[slot.User] = decodeClients(v)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("password clients: %w", err)
	}
	return out, nil
}

// recentAccounts keeps the accounts with a client seen since since, each
// record trimmed to ClientRetention.
func recentAccounts(all map[string][]PasswordClient, since, now time.Time) map[string][]PasswordClient {
	out := map[string][]PasswordClient{}
	for user, list := range all {
		list = trimClients(list, now)
		if len(list) > 0 && !list[0].Last.Before(since) {
			out[user] = list
		}
	}
	return out
}

// decodeClients reads a stored record; an unreadable one is empty.
func decodeClients(data []byte) []PasswordClient {
	if data == nil {
		return nil
	}
	var list []PasswordClient
	if json.Unmarshal(data, &list) != nil {
		return nil
	}
	return list
}

// ReadClients reads user's record of kind from the last-use database at
// path, read-only, for the CLI while no server runs (a running server
// holds the file's lock; ask it instead). A missing file means none.
func ReadClients(path string, kind ClientKind, user string) ([]PasswordClient, error) {
	var list []PasswordClient
	err := viewReadOnly(path, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket(clientsBucket); b != nil {
				list = decodeClients(b.Get(clientKey(ClientSlot{kind, ClientUserKey(user)})))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return trimClients(list, time.Now()), nil
}

// ReadClientAccounts is Accounts on the last-use database at path,
// read-only, for the CLI while no server runs.
func ReadClientAccounts(path string, kind ClientKind, since time.Time) (map[string][]PasswordClient, error) {
	var all map[string][]PasswordClient
	err := viewReadOnly(path, func(db *bolt.DB) error {
		var err error
		all, err = readClientAccounts(db, kind)
		return err
	})
	if err != nil {
		return nil, err
	}
	if all == nil {
		all = map[string][]PasswordClient{}
	}
	return recentAccounts(all, since, time.Now()), nil
}

// viewReadOnly opens the bbolt file at path read-only for f; a missing
// file is not an error (f is not called).
func viewReadOnly(path string, f func(*bolt.DB) error) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: boltTimeout})
	if err != nil {
		return fmt.Errorf("last-use database %s: %w", path, err)
	}
	defer db.Close()
	return f(db)
}
