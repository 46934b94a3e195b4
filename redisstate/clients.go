package redisstate

import (
	"context"
	_ "embed" // the password clients' Lua script
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/auth"
)

//go:embed clients.lua
var clientsLua string

// clientsTag is the hash tag of the password clients' keys: one script
// writes a batch of accounts' records and both indexes, so they share a
// slot.
const clientsTag = "c"

const (
	// clientsFlush is how long a change may wait before it is written.
	clientsFlush = time.Second
	// clientsBatch is the most accounts written by one script call; a
	// flush after an outage makes several, one round trip each.
	clientsBatch = 100
	// clientsPage is the most records Accounts reads with one MGET.
	clientsPage = 500
	// clientsIndexPart names the indexes: {c}:index:<kind>. It comes
	// before the kind, so that no user key can name an index.
	clientsIndexPart = "index"
	// clientNumMax bounds the numbers a stored row may hold; larger ones
	// make it unreadable (clients.lua's num_max).
	clientNumMax = 1 << 62
)

// Clients is an auth.ClientKeeper that keeps, in Redis, the mail clients
// that presented an account password, shared by every node: the portal,
// the admin socket and the CLI on any node see the clients that knocked
// on any other. Its rules are auth's (MergeClients, ClientPending.Apply),
// run by a Lua script (clients.lua) on Redis's clock.
//
// Layout, after the prefix:
//
//	{c}:<kind>:<user>  one account's record of a kind (refused,
//	                   password), <user> its auth.ClientUserKey: a JSON
//	                   array of at most auth.MaxClientsPerAccount rows
//	                   {protocol, name, version, ip, first, last, count},
//	                   times in Unix ms, most recent first; PX until its
//	                   newest row is auth.ClientRetention old (at most
//	                   ClientRetention); deleted when it has no row left
//	{c}:index:<kind>   the sorted set of the accounts with a record of
//	                   kind: member <user>, score its newest last seen
//	                   (ms); entries older than ClientRetention are
//	                   removed at each write; PX ClientRetention
//
// Nothing secret is stored: names, addresses, counts and times. Keys are
// only ever named, never matched against a pattern, so a user name may
// hold any character.
//
// Seen and Forget only touch memory (an auth.ClientBuffer). A background
// writer flushes the changes every second, up to clientsBatch accounts in
// one script call (one round trip). While Redis is down the changes wait
// in memory, at most auth.ClientPendingMax accounts; beyond that new
// ones are dropped and counted (Dropped). A warning is logged once per
// outage. Safe for concurrent use.
type Clients struct {
	c     *Client
	log   *slog.Logger
	every time.Duration
	buf   *auth.ClientBuffer
	write *redis.Script

	mu     sync.RWMutex // guards closed
	closed bool

	// flushMu makes one flush at a time, so that an account's batches
	// reach Redis in order; reads hold it too, so that they see a change
	// taken by a flush exactly once (in Redis or in the buffer).
	flushMu sync.Mutex
	warned  bool // a failed flush was logged since the last good one

	dropWarned atomic.Bool
	dropped    atomic.Uint64 // not written at Close

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ auth.ClientKeeper = (*Clients)(nil)

// NewClients returns the password clients' store of c and starts its
// writer. Close stops the writer after a last flush; it does not close c.
func NewClients(c *Client, log *slog.Logger) *Clients {
	return newClients(c, log, clientsFlush)
}

func newClients(c *Client, log *slog.Logger, every time.Duration) *Clients {
	s := &Clients{
		c:     c,
		log:   log.With("component", "redis-clients"),
		every: every,
		buf:   auth.NewClientBuffer(0),
		write: redis.NewScript(clientsLua),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go s.run()
	return s
}

func (s *Clients) run() {
	defer close(s.done)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_ = s.Flush()
		}
	}
}

// key is the key of slot's record.
func (s *Clients) key(slot auth.ClientSlot) string {
	return s.c.Key(clientsTag, slot.Kind.String(), slot.User)
}

// indexKey is the key of kind's index.
func (s *Clients) indexKey(kind auth.ClientKind) string {
	return s.c.Key(clientsTag, clientsIndexPart, kind.String())
}

// Seen notes a login of c for user. It never waits on Redis.
func (s *Clients) Seen(kind auth.ClientKind, user string, c auth.PasswordClient) {
	if s == nil {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	if !s.buf.Seen(kind, user, c, time.Now()) && kind.Valid() && user != "" {
		s.warnDrop()
	}
}

// Forget drops user's refused rows that match c, at the next write. It
// never waits on Redis.
func (s *Clients) Forget(user string, c auth.PasswordClient) {
	if s == nil {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	if !s.buf.Forget(user, c) && user != "" {
		s.warnDrop()
	}
}

// warnDrop logs, once until a flush succeeds, that the buffer is full.
func (s *Clients) warnDrop() {
	if s.dropWarned.CompareAndSwap(false, true) {
		s.log.Warn("password clients: Redis does not answer and the buffer is full; dropping the changes of further accounts until it answers", "buffered", s.buf.Len())
	}
}

// Dropped returns how many changes were dropped because the buffer was
// full while Redis did not answer, plus the accounts whose changes were
// still unwritten at Close.
func (s *Clients) Dropped() uint64 { return s.buf.Dropped() + s.dropped.Load() }

// Flush writes the waiting changes now. What Redis did not take (it is
// down, or failed mid-way) waits for the next flush, before the changes
// made since.
func (s *Clients) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.buf.Len() == 0 {
		if s.c.Up() {
			s.recovered()
		}
		return nil
	}
	if !s.c.Up() {
		s.warnFailed(ErrDown)
		return fmt.Errorf("password clients: %w", ErrDown)
	}
	batch := s.buf.Take()
	slots := make([]auth.ClientSlot, 0, len(batch))
	for slot := range batch {
		slots = append(slots, slot)
	}
	var err error
	for len(slots) > 0 {
		n := min(len(slots), clientsBatch)
		if err = s.writeBatch(batch, slots[:n]); err != nil {
			break
		}
		for _, slot := range slots[:n] {
			delete(batch, slot)
		}
		slots = slots[n:]
	}
	if err != nil {
		s.buf.PutBack(batch, time.Now())
		s.warnFailed(err)
		return fmt.Errorf("password clients: %w", downErr(s.c, err))
	}
	s.recovered()
	return nil
}

// recovered re-arms the warnings once nothing waits for Redis. s.flushMu
// is held.
func (s *Clients) recovered() {
	s.warned = false
	s.dropWarned.Store(false)
}

// warnFailed logs, once until a flush succeeds, that the changes wait
// for Redis. s.flushMu is held.
func (s *Clients) warnFailed(err error) {
	if s.warned {
		return
	}
	s.warned = true
	s.log.Warn("password clients: cannot write to Redis; the changes wait in memory until it answers", "err", err, "accounts", s.buf.Len())
}

// writeBatch runs clients.lua on the records of slots.
func (s *Clients) writeBatch(batch map[auth.ClientSlot]auth.ClientPending, slots []auth.ClientSlot) error {
	keys := make([]string, 0, 2+len(slots))
	keys = append(keys, s.indexKey(auth.ClientRefused), s.indexKey(auth.ClientPassword))
	args := make([]any, 0, 2+3*len(slots))
	args = append(args, auth.ClientRetention.Milliseconds(), auth.MaxClientsPerAccount)
	for _, slot := range slots {
		index := 1
		if slot.Kind == auth.ClientPassword {
			index = 2
		}
		p, err := encodePending(batch[slot])
		if err != nil {
			return err
		}
		keys = append(keys, s.key(slot))
		args = append(args, index, slot.User, p)
	}
	return s.c.Do(context.Background(), func(ctx context.Context) error {
		return s.write.Run(ctx, s.c.Redis(), keys, args...).Err()
	})
}

// Clients returns user's record of kind, most recently seen first, the
// changes not yet written included. It fails while Redis does not
// answer, with an error wrapping ErrDown.
func (s *Clients) Clients(kind auth.ClientKind, user string) ([]auth.PasswordClient, error) {
	if !kind.Valid() {
		return nil, nil
	}
	slot := auth.ClientSlot{Kind: kind, User: auth.ClientUserKey(user)}
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	var v string
	err := s.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		v, err = s.c.Redis().Get(ctx, s.key(slot)).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("password clients: %w", downErr(s.c, err))
	}
	list := decodeClients(v)
	now := time.Now()
	if p, ok := s.buf.Peek(slot); ok {
		return p.Apply(list, now), nil
	}
	return auth.MergeClients(list, nil, now), nil
}

// Accounts returns, by ClientUserKey, the records of kind with a client
// seen since since, the changes not yet written included. It fails while
// Redis does not answer, with an error wrapping ErrDown.
func (s *Clients) Accounts(kind auth.ClientKind, since time.Time) (map[string][]auth.PasswordClient, error) {
	out := map[string][]auth.PasswordClient{}
	if !kind.Valid() {
		return out, nil
	}
	since = since.Truncate(time.Millisecond) // as stored
	lo := "-inf"
	if !since.IsZero() {
		lo = strconv.FormatInt(since.UnixMilli(), 10)
	}
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	var users []string
	err := s.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		users, err = s.c.Redis().ZRangeByScore(ctx, s.indexKey(kind), &redis.ZRangeBy{Min: lo, Max: "+inf"}).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("password clients: %w", downErr(s.c, err))
	}
	// An account with changes waiting is read too, whatever its index
	// entry says: its stored rows are part of its record.
	pending := s.buf.Slots(kind)
	listed := make(map[string]bool, len(users))
	for _, u := range users {
		listed[u] = true
	}
	for _, slot := range pending {
		if !listed[slot.User] {
			listed[slot.User] = true
			users = append(users, slot.User)
		}
	}
	all := make(map[string][]auth.PasswordClient, len(users))
	for start := 0; start < len(users); start += clientsPage {
		page := users[start:min(start+clientsPage, len(users))]
		keys := make([]string, len(page))
		for i, u := range page {
			keys[i] = s.key(auth.ClientSlot{Kind: kind, User: u})
		}
		var vals []any
		err := s.c.Do(context.Background(), func(ctx context.Context) error {
			var err error
			vals, err = s.c.Redis().MGet(ctx, keys...).Result()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("password clients: %w", downErr(s.c, err))
		}
		for i, v := range vals {
			str, _ := v.(string)
			all[page[i]] = decodeClients(str)
		}
	}
	now := time.Now()
	for user, list := range all {
		if p, ok := s.buf.Peek(auth.ClientSlot{Kind: kind, User: user}); ok {
			list = p.Apply(list, now)
		} else {
			list = auth.MergeClients(list, nil, now)
		}
		if len(list) > 0 && !list[0].Last.Before(since) {
			out[user] = list
		}
	}
	return out, nil
}

// Close stops the writer and makes a last flush. Changes Redis does not
// take then are lost (counted in Dropped); the error says for how many
// accounts.
func (s *Clients) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		err := s.Flush()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		n := len(s.buf.Take())
		if n > 0 {
			s.dropped.Add(uint64(n))
			err = errors.Join(err, fmt.Errorf("password clients: the changes of %d account(s) not written to Redis", n))
		}
		s.closeErr = err
	})
	return s.closeErr
}

// downErr makes err, a failed command, wrap ErrDown when it marked Redis
// down (the first failure of an outage returns the network's error).
func downErr(c *Client, err error) error {
	if errors.Is(err, ErrDown) || c.Up() {
		return err
	}
	return fmt.Errorf("%w: %w", ErrDown, err)
}

// clientRow is a PasswordClient as stored in Redis and passed to
// clients.lua: times in Unix ms (0 for none). The numbers are float64 so
// that Go reads what Lua (whose numbers are doubles) reads.
type clientRow struct {
	Protocol string  `json:"protocol"`
	Name     string  `json:"name,omitempty"`
	Version  string  `json:"version,omitempty"`
	IP       string  `json:"ip"`
	First    float64 `json:"first"`
	Last     float64 `json:"last"`
	Count    float64 `json:"count"`
}

// clientPending is an auth.ClientPending as passed to clients.lua.
type clientPending struct {
	Forgets []clientRow `json:"forgets"`
	Seen    []clientRow `json:"seen"`
}

func toMillis(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli())
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func toRow(c auth.PasswordClient) clientRow {
	return clientRow{Protocol: c.Protocol, Name: c.Name, Version: c.Version, IP: c.IP,
		First: toMillis(c.First), Last: toMillis(c.Last), Count: float64(c.Count)}
}

// encodePending returns the JSON of p for clients.lua.
func encodePending(p auth.ClientPending) (string, error) {
	w := clientPending{Forgets: make([]clientRow, len(p.Forgets)), Seen: make([]clientRow, len(p.Seen))}
	for i, c := range p.Forgets {
		w.Forgets[i] = clientRow{Protocol: c.Protocol, Name: c.Name, IP: c.IP}
	}
	for i, c := range p.Seen {
		w.Seen[i] = toRow(c)
	}
	data, err := json.Marshal(w)
	return string(data), err
}

// decodeClients reads a stored record as clients.lua does: a value that
// is not a JSON array of rows (missing included) is empty.
func decodeClients(v string) []auth.PasswordClient {
	if v == "" {
		return nil
	}
	var rows []clientRow
	if json.Unmarshal([]byte(v), &rows) != nil {
		return nil
	}
	list := make([]auth.PasswordClient, 0, len(rows))
	for _, r := range rows {
		first, ok1 := readNum(r.First)
		last, ok2 := readNum(r.Last)
		count, ok3 := readNum(r.Count)
		if !ok1 || !ok2 || !ok3 {
			return nil
		}
		list = append(list, auth.PasswordClient{Protocol: r.Protocol, Name: r.Name, Version: r.Version, IP: r.IP,
			First: fromMillis(first), Last: fromMillis(last), Count: count})
	}
	return list
}

// readNum floors a stored number; ok is false when it is out of range.
func readNum(f float64) (int64, bool) {
	if math.IsNaN(f) || f > clientNumMax || f < -clientNumMax {
		return 0, false
	}
	return int64(math.Floor(f)), true
}
