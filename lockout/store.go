package lockout

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Database layout. Every value starts with a format byte (recordV1).
//
//	meta          "schema" -> schemaVersion
//	counters      scope byte + key -> counter (key: user, user NUL ip, ip, prefix)
//	fingerprints  user -> n × (fingerprint, confirmed, checked)
//	known_good    user NUL ip -> last success
//
// Users are normalized (case-folded); times are Unix nanoseconds.
const (
	bucketCounters     = 'c'
	bucketFingerprints = 'f'
	bucketKnownGood    = 'k'
	schemaVersion      = 1
	recordV1           = 1
	counterLen         = 1 + 8 + 4 + 4 + 8 + 1 + 4 + 8
	fpRecordLen        = fpLen + 8 + 8
)

var (
	bucketMeta  = []byte("meta")
	bucketNames = map[byte][]byte{
		bucketCounters:     []byte("counters"),
		bucketFingerprints: []byte("fingerprints"),
		bucketKnownGood:    []byte("known_good"),
	}
)

// lockTimeout is how long Open waits for the database file's lock, held
// by a running kanmon.
const lockTimeout = 2 * time.Second

// minSecret is the least key length accepted for fingerprints.
const minSecret = 16

// Open opens (creating it and its directory if needed) the bbolt database
// at path, normally state_dir/kanmon.db, and loads its state, dropping what
// has expired. secret keys the fingerprints of wrong secrets (kanmon passes
// the pepper); with another key, remembered fingerprints simply never
// match. The file is locked while the Guard is open: a second process
// fails after a few seconds.
func Open(path string, secret []byte, opts Options) (*Guard, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(secret) < minSecret {
		return nil, fmt.Errorf("lockout: fingerprint key has %d bytes, want at least %d", len(secret), minSecret)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lockout: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return nil, fmt.Errorf("lockout: opening %s (is another kanmon running?): %w", path, err)
	}
	g := &Guard{
		opts:   o,
		secret: bytes.Clone(secret),
		db:     db,
		fps:    map[string]fpSet{},
		good:   map[string]int64{},
		goodIP: map[netip.Addr]int64{},
		dirty:  map[string]struct{}{},
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for s := ScopeAccountIP; s < numScopes; s++ {
		g.counters[s] = map[string]*counter{}
	}
	if err := g.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("lockout: loading %s: %w", path, err)
	}
	go g.writer()
	g.kickWriter() // delete what load found expired
	return g, nil
}

// load creates the buckets and reads the state into memory. Expired,
// unreadable and over-the-limit records are marked for deletion.
func (g *Guard) load() error {
	err := g.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get([]byte("schema")); {
		case v == nil:
			if err := meta.Put([]byte("schema"), []byte{schemaVersion}); err != nil {
				return err
			}
		case len(v) != 1 || v[0] > schemaVersion:
			return fmt.Errorf("database schema %v is newer than this kanmon's (%d)", v, schemaVersion)
		}
		for _, name := range bucketNames {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	n := nanos(g.opts.Now())
	ttl, goodTTL := int64(g.opts.FingerprintTTL), int64(g.opts.KnownGoodTTL)
	return g.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketNames[bucketCounters]).ForEach(func(k, v []byte) error {
			c, ok := decodeCounter(v)
			s := Scope(0)
			if len(k) > 0 {
				s = Scope(k[0])
			}
			if ok && s > ScopeNone && s < numScopes && !g.counterExpired(s, &c, n) && len(g.counters[s]) < g.opts.MaxEntries {
				g.counters[s][string(k[1:])] = &c
			} else {
				g.markDirty(bucketCounters, string(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketNames[bucketFingerprints]).ForEach(func(k, v []byte) error {
			set, ok := decodeFingerprints(v)
			set = set.prune(n, ttl)
			if ok && len(set) > 0 && len(g.fps) < g.opts.MaxEntries {
				if len(set) > g.opts.Fingerprints {
					slices.SortFunc(set, func(a, b fingerprint) int { return cmp.Compare(b.confirmed, a.confirmed) })
					set = set[:g.opts.Fingerprints]
				}
				g.fps[string(k)] = set
			} else {
				g.markDirty(bucketFingerprints, string(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketNames[bucketKnownGood]).ForEach(func(k, v []byte) error {
			if len(v) == 9 && v[0] == recordV1 && len(g.good) < g.opts.MaxEntries {
				if t := int64(binary.LittleEndian.Uint64(v[1:])); n < t+goodTTL {
					g.good[string(k)] = t
					if _, ipText, ok := strings.Cut(string(k), "\x00"); ok {
						if ip, err := netip.ParseAddr(ipText); err == nil {
							g.noteGoodIP(ip, t)
						}
					}
					return nil
				}
			}
			g.markDirty(bucketKnownGood, string(k))
			return nil
		})
	})
}

// counterKey is the counters bucket key of scope s's key.
func counterKey(s Scope, key string) string { return string([]byte{byte(s)}) + key }

// markDirty notes that the record key of bucket b must be written (or
// deleted, if it is no longer in memory). Callers hold g.mu.
func (g *Guard) markDirty(b byte, key string) {
	g.dirty[string(b)+key] = struct{}{}
}

// kickWriter tells the writer there is something to write.
func (g *Guard) kickWriter() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// writer writes changes BatchDelay after the first one arrives, retries a
// failed write with a backoff of up to 5 s, and sweeps expired entries once
// a minute. It stops when g.stop is closed.
func (g *Guard) writer() {
	defer close(g.done)
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	timer := time.NewTimer(0)
	<-timer.C
	wait := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-timer.C:
			return true
		case <-g.stop:
			timer.Stop()
			return false
		}
	}
	for {
		select {
		case <-g.stop:
			return
		case <-sweep.C:
			g.sweep()
		case <-g.kick:
		}
		if !wait(g.opts.BatchDelay) {
			return
		}
		for backoff := g.opts.BatchDelay; g.flush() != nil; backoff = min(2*backoff, 5*time.Second) {
			if !wait(backoff) {
				return
			}
		}
	}
}

// op is one record to write, or to delete if val is nil.
type op struct {
	key string // bucket byte + key
	val []byte
}

// flush writes the dirty records in one transaction. On failure they stay
// dirty and Check fails closed until a later flush succeeds.
func (g *Guard) flush() error {
	g.mu.Lock()
	if len(g.dirty) == 0 {
		err := g.storeErr
		g.mu.Unlock()
		if err != nil { // nothing to retry with: probe the database
			err = g.db.Update(func(*bolt.Tx) error { return nil })
			g.setStoreErr(err)
		}
		return err
	}
	ops := make([]op, 0, len(g.dirty))
	for k := range g.dirty {
		ops = append(ops, op{key: k, val: g.encode(k)})
	}
	clear(g.dirty)
	g.mu.Unlock()
	slices.SortFunc(ops, func(a, b op) int { return strings.Compare(a.key, b.key) })
	err := g.db.Update(func(tx *bolt.Tx) error {
		var b *bolt.Bucket
		var cur byte
		for _, o := range ops {
			if b == nil || o.key[0] != cur {
				cur, b = o.key[0], tx.Bucket(bucketNames[o.key[0]])
				if b == nil {
					return fmt.Errorf("bucket %q missing", bucketNames[cur])
				}
			}
			k := []byte(o.key[1:])
			if o.val == nil {
				if err := b.Delete(k); err != nil {
					return err
				}
			} else if err := b.Put(k, o.val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		g.mu.Lock()
		for _, o := range ops {
			g.dirty[o.key] = struct{}{}
		}
		g.mu.Unlock()
	}
	g.setStoreErr(err)
	return err
}

// setStoreErr records the outcome of a write.
func (g *Guard) setStoreErr(err error) {
	if err != nil {
		err = fmt.Errorf("lockout: writing %s: %w", g.db.Path(), err)
	}
	g.mu.Lock()
	g.storeErr = err
	g.mu.Unlock()
}

// encode returns the current value of dirty record key, nil if it is gone.
// Callers hold g.mu.
func (g *Guard) encode(key string) []byte {
	k := key[1:]
	switch key[0] {
	case bucketCounters:
		if s := Scope(k[0]); s > ScopeNone && s < numScopes {
			if c := g.counters[s][k[1:]]; c != nil {
				return encodeCounter(c)
			}
		}
	case bucketFingerprints:
		if set := g.fps[k]; len(set) > 0 {
			b := make([]byte, 0, 2+len(set)*fpRecordLen)
			b = append(b, recordV1, byte(len(set)))
			for _, f := range set {
				b = append(b, f.sum[:]...)
				b = binary.LittleEndian.AppendUint64(b, uint64(f.confirmed))
				b = binary.LittleEndian.AppendUint64(b, uint64(f.checked))
			}
			return b
		}
	case bucketKnownGood:
		if t, ok := g.good[k]; ok {
			return binary.LittleEndian.AppendUint64([]byte{recordV1}, uint64(t))
		}
	}
	return nil
}

// encodeCounter serializes c.
func encodeCounter(c *counter) []byte {
	b := make([]byte, 0, counterLen)
	b = append(b, recordV1)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.start))
	b = binary.LittleEndian.AppendUint32(b, c.cur)
	b = binary.LittleEndian.AppendUint32(b, c.prev)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.until))
	b = append(b, c.level)
	b = binary.LittleEndian.AppendUint32(b, c.consec)
	return binary.LittleEndian.AppendUint64(b, uint64(c.last))
}

// decodeCounter parses encodeCounter's output.
func decodeCounter(b []byte) (counter, bool) {
	if len(b) != counterLen || b[0] != recordV1 {
		return counter{}, false
	}
	le := binary.LittleEndian
	return counter{
		start:  int64(le.Uint64(b[1:])),
		cur:    le.Uint32(b[9:]),
		prev:   le.Uint32(b[13:]),
		until:  int64(le.Uint64(b[17:])),
		level:  b[25],
		consec: le.Uint32(b[26:]),
		last:   int64(le.Uint64(b[30:])),
	}, true
}

// decodeFingerprints parses a fingerprints record.
func decodeFingerprints(b []byte) (fpSet, bool) {
	if len(b) < 2 || b[0] != recordV1 || len(b) != 2+int(b[1])*fpRecordLen {
		return nil, false
	}
	set := make(fpSet, b[1])
	le := binary.LittleEndian
	for i := range set {
		r := b[2+i*fpRecordLen:]
		copy(set[i].sum[:], r)
		set[i].confirmed = int64(le.Uint64(r[fpLen:]))
		set[i].checked = int64(le.Uint64(r[fpLen+8:]))
	}
	return set, true
}

// sweep drops expired entries from memory (and so from the database). It
// holds g.mu for one pass over the tables: about 50 ms at a million entries.
func (g *Guard) sweep() {
	n := nanos(g.opts.Now())
	ttl, goodTTL := int64(g.opts.FingerprintTTL), int64(g.opts.KnownGoodTTL)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	for s := ScopeAccountIP; s < numScopes; s++ {
		for k, c := range g.counters[s] {
			if g.counterExpired(s, c, n) {
				delete(g.counters[s], k)
				g.markDirty(bucketCounters, counterKey(s, k))
			}
		}
	}
	for k, set := range g.fps {
		if set = set.prune(n, ttl); len(set) == 0 {
			delete(g.fps, k)
			g.markDirty(bucketFingerprints, k)
		} else {
			g.fps[k] = set
		}
	}
	for k, t := range g.good {
		if n >= t+goodTTL {
			delete(g.good, k)
			g.markDirty(bucketKnownGood, k)
		}
	}
	for ip, t := range g.goodIP {
		if n >= t+goodTTL {
			delete(g.goodIP, ip)
		}
	}
	if len(g.dirty) > 0 {
		g.kickWriter()
	}
}
