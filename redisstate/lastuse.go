package redisstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/auth"
)

// lastUseTag is the hash tag of the last-use hash.
const lastUseTag = "u"

const (
	// LastUseTTL is how long a passcode's last use is kept after it
	// happened: a record older than that is not shown and is deleted at
	// the next Retain, and the whole hash expires that long after its
	// last write. It is longer than a year, so that a passcode used once
	// a year still shows its last use.
	LastUseTTL = 400 * 24 * time.Hour
	// LastUsePendingMax bounds the records (distinct passcodes) waiting
	// to be written. While Redis is down they wait here and are written
	// when it answers again; a record of a passcode not yet waiting,
	// arriving while the buffer is full, is dropped and counted
	// (Dropped). A later use of a waiting passcode replaces its record,
	// so a buffer this size covers the outage of a large site.
	LastUsePendingMax = 65536
	// lastUseFlush is how long a record may wait before it is written.
	lastUseFlush = time.Second
	// lastUseBatch is the most records written by one script call; a
	// flush after an outage makes several, one round trip each.
	lastUseBatch = 1000
	// lastUseScan is the HSCAN page size of All and Retain.
	lastUseScan = 1000
	// lastUseRetainGrace is how recent a record of a passcode that Retain
	// does not know may be and still stay: another node may have a newer
	// accounts snapshot, with a passcode this node has not seen yet.
	lastUseRetainGrace = time.Hour
)

// recordLua writes records into the hash KEYS[1] and keeps its TTL
// (ARGV[1], ms). ARGV[2..] are pairs of passcode ID and value; a value is
// "<unix ms> <JSON auth.LastUse>". A stored value that is newer (another
// node's later use, written while this node's record waited) stays.
const recordLua = `
local written = 0
for i = 2, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local ot = old and tonumber(string.match(old, '^(%d+) '))
  local nt = tonumber(string.match(ARGV[i+1], '^(%d+) ')) or 0
  if not ot or ot <= nt then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1])
    written = written + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return written
`

// pruneLua deletes fields of the hash KEYS[1]. ARGV are pairs of passcode
// ID and cutoff (unix ms): the field goes when its use is at or before
// the cutoff, or unreadable, so that a use another node wrote after Retain
// read the hash stays.
const pruneLua = `
local n = 0
for i = 1, #ARGV, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local t = tonumber(string.match(v, '^(%d+) '))
    if not t or t <= tonumber(ARGV[i+1]) then
      redis.call('HDEL', KEYS[1], ARGV[i])
      n = n + 1
    end
  end
end
return n
`

// LastUse is an auth.LastUseKeeper that keeps the passcodes' last use in
// Redis, shared by every node: `kanmon passcode list` and the portal on
// any node show a use made through any other.
//
// Layout: one hash, <prefix>{u}:last, field = passcode ID, value =
// "<unix ms> <JSON auth.LastUse>". The hash expires LastUseTTL after its
// last write; records older than LastUseTTL are hidden and pruned by
// Retain, as are those of revoked passcodes, so the hash holds at most
// the passcodes in use.
//
// Record only touches memory. A background writer flushes the records
// every second, up to lastUseBatch of them in one script call (one round
// trip). While Redis is down the records wait in memory, at most
// LastUsePendingMax passcodes; beyond that new ones are dropped and
// counted (Dropped), and a warning is logged once per outage. They are
// written when Redis answers again. Safe for concurrent use.
type LastUse struct {
	c     *Client
	key   string
	log   *slog.Logger
	every time.Duration

	record, prune *redis.Script

	mu         sync.Mutex
	pending    map[string]auth.LastUse
	max        int // LastUsePendingMax; tests lower it
	closed     bool
	dropWarned bool // a drop was logged since the last good flush
	dropped    atomic.Uint64

	flushMu sync.Mutex // one flush at a time

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ auth.LastUseKeeper = (*LastUse)(nil)

// NewLastUse returns the last-use store of c and starts its writer.
// Close stops the writer after a last flush; it does not close c.
func NewLastUse(c *Client, log *slog.Logger) *LastUse {
	return newLastUse(c, log, lastUseFlush)
}

func newLastUse(c *Client, log *slog.Logger, every time.Duration) *LastUse {
	l := &LastUse{
		c:       c,
		key:     c.Key(lastUseTag, "last"),
		log:     log.With("component", "redis-last-use"),
		every:   every,
		record:  redis.NewScript(recordLua),
		prune:   redis.NewScript(pruneLua),
		pending: map[string]auth.LastUse{},
		max:     LastUsePendingMax,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.run()
	return l
}

func (l *LastUse) run() {
	defer close(l.done)
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.Flush()
		}
	}
}

// Record notes a use of the passcode with the given ID. It never waits
// on Redis.
func (l *LastUse) Record(id string, u auth.LastUse) {
	if l == nil || id == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.keepLocked(id, u)
}

// keepLocked puts u in pending unless a newer record of id waits there;
// a new id beyond LastUsePendingMax is dropped. l.mu is held.
func (l *LastUse) keepLocked(id string, u auth.LastUse) {
	if old, ok := l.pending[id]; ok {
		if !u.Time.Before(old.Time) {
			l.pending[id] = u
		}
		return
	}
	if len(l.pending) >= l.max {
		l.dropped.Add(1)
		if !l.dropWarned {
			l.dropWarned = true
			l.log.Warn("passcode last use: Redis does not answer and the buffer is full; dropping the uses of further passcodes until it answers", "buffered", len(l.pending))
		}
		return
	}
	l.pending[id] = u
}

// Dropped returns how many records were dropped because the buffer was
// full while Redis did not answer (or still held at Close).
func (l *LastUse) Dropped() uint64 { return l.dropped.Load() }

// Pending returns how many passcodes' records wait to be written.
func (l *LastUse) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// Flush writes the waiting records now. What Redis did not take (it is
// down, or failed mid-way) waits for the next flush.
func (l *LastUse) Flush() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	batch := l.pending
	if len(batch) == 0 {
		l.mu.Unlock()
		return nil
	}
	if !l.c.Up() {
		l.mu.Unlock()
		return fmt.Errorf("passcode last use: %w", ErrDown)
	}
	l.pending = make(map[string]auth.LastUse, len(batch))
	l.mu.Unlock()

	args := make([]any, 0, 2*min(len(batch), lastUseBatch)+1)
	var err error
	var sent []string
	for id, u := range batch {
		if len(args) == 0 {
			args = append(args, LastUseTTL.Milliseconds())
		}
		v, verr := encodeLastUse(u)
		if verr != nil {
			delete(batch, id)
			continue
		}
		args = append(args, id, v)
		sent = append(sent, id)
		if len(sent) == lastUseBatch {
			if err = l.write(args); err != nil {
				break
			}
			for _, id := range sent {
				delete(batch, id)
			}
			args, sent = args[:0], sent[:0]
		}
	}
	if err == nil && len(sent) > 0 {
		if err = l.write(args); err == nil {
			for _, id := range sent {
				delete(batch, id)
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.dropWarned = false
		return nil
	}
	// Put back what was not written; a newer record taken meanwhile wins.
	for id, u := range batch {
		if l.closed {
			l.dropped.Add(1)
			continue
		}
		l.keepLocked(id, u)
	}
	return fmt.Errorf("passcode last use: %w", err)
}

// write runs recordLua with args (the TTL, then ID/value pairs).
func (l *LastUse) write(args []any) error {
	return l.c.Do(context.Background(), func(ctx context.Context) error {
		return l.record.Run(ctx, l.c.Redis(), []string{l.key}, args...).Err()
	})
}

// encodeLastUse returns the hash value of u: "<unix ms> <JSON>".
func encodeLastUse(u auth.LastUse) (string, error) {
	data, err := json.Marshal(u)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(max(u.Time.UnixMilli(), 0), 10) + " " + string(data), nil
}

// decodeLastUse reads a hash value; ok is false when it is unreadable.
func decodeLastUse(v string) (u auth.LastUse, ms int64, ok bool) {
	t, data, found := strings.Cut(v, " ")
	if !found {
		return u, 0, false
	}
	ms, err := strconv.ParseInt(t, 10, 64)
	if err != nil || json.Unmarshal([]byte(data), &u) != nil {
		return u, 0, false
	}
	return u, ms, true
}

// scan calls f with every field and value of the hash, a page
// (lastUseScan fields) per round trip.
func (l *LastUse) scan(f func(id, v string)) error {
	var cursor uint64
	for {
		var kv []string
		err := l.c.Do(context.Background(), func(ctx context.Context) error {
			var err error
			kv, cursor, err = l.c.Redis().HScan(ctx, l.key, cursor, "", lastUseScan).Result()
			return err
		})
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(kv); i += 2 {
			f(kv[i], kv[i+1])
		}
		if cursor == 0 {
			return nil
		}
	}
}

// All returns the last use of every passcode, from Redis and the records
// still waiting here, by passcode ID. Records older than LastUseTTL are
// left out. It fails while Redis does not answer.
func (l *LastUse) All() (map[string]auth.LastUse, error) {
	out := map[string]auth.LastUse{}
	oldest := time.Now().Add(-LastUseTTL).UnixMilli()
	err := l.scan(func(id, v string) {
		if u, ms, ok := decodeLastUse(v); ok && ms > oldest {
			out[id] = u
		}
	})
	if err != nil {
		return nil, fmt.Errorf("passcode last use: %w", err)
	}
	l.mergePending(out, nil)
	return out, nil
}

// Get returns the last use of the passcodes in ids that have one: a
// single HMGET, for a page that shows one account's passcodes.
func (l *LastUse) Get(ids []string) (map[string]auth.LastUse, error) {
	out := map[string]auth.LastUse{}
	if len(ids) == 0 {
		return out, nil
	}
	var vals []any
	err := l.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		vals, err = l.c.Redis().HMGet(ctx, l.key, ids...).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("passcode last use: %w", err)
	}
	oldest := time.Now().Add(-LastUseTTL).UnixMilli()
	for i, v := range vals {
		s, _ := v.(string)
		if u, ms, ok := decodeLastUse(s); ok && ms > oldest {
			out[ids[i]] = u
		}
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	l.mergePending(out, want)
	return out, nil
}

// mergePending puts the waiting records (of the IDs in want; all when
// want is nil) into out, where they are newer.
func (l *LastUse) mergePending(out map[string]auth.LastUse, want map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, u := range l.pending {
		if want != nil && !want[id] {
			continue
		}
		if old, ok := out[id]; !ok || !u.Time.Before(old.Time) {
			out[id] = u
		}
	}
}

// Retain deletes the records of passcodes whose ID is not in keep (they
// were revoked) and those older than LastUseTTL. A record of an unknown
// ID used within the last hour stays: another node may know a passcode
// this node's accounts do not have yet. A deletion is conditional (a
// script), so a use another node writes meanwhile stays.
func (l *LastUse) Retain(keep map[string]bool) error {
	l.mu.Lock()
	for id := range l.pending {
		if !keep[id] {
			delete(l.pending, id)
		}
	}
	l.mu.Unlock()
	now := time.Now()
	graceCut := now.Add(-lastUseRetainGrace).UnixMilli()
	ttlCut := now.Add(-LastUseTTL).UnixMilli()
	var drop []any
	err := l.scan(func(id, v string) {
		_, ms, ok := decodeLastUse(v)
		switch {
		case !ok:
			drop = append(drop, id, now.UnixMilli())
		case ms <= ttlCut:
			drop = append(drop, id, ttlCut)
		case !keep[id] && ms <= graceCut:
			drop = append(drop, id, graceCut)
		}
	})
	for len(drop) > 0 && err == nil {
		n := min(len(drop), 2*lastUseBatch)
		chunk := drop[:n]
		drop = drop[n:]
		err = l.c.Do(context.Background(), func(ctx context.Context) error {
			return l.prune.Run(ctx, l.c.Redis(), []string{l.key}, chunk...).Err()
		})
	}
	if err != nil {
		return fmt.Errorf("passcode last use: pruning: %w", err)
	}
	return nil
}

// Close stops the writer and makes a last flush. Records Redis does not
// take then are lost (counted in Dropped); the error says how many.
func (l *LastUse) Close() error {
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		err := l.Flush()
		l.mu.Lock()
		l.closed = true
		n := len(l.pending)
		l.pending = map[string]auth.LastUse{}
		l.mu.Unlock()
		if n > 0 {
			l.dropped.Add(uint64(n))
			l.closeErr = errors.Join(err, fmt.Errorf("passcode last use: %d record(s) not written to Redis", n))
		}
	})
	return l.closeErr
}
