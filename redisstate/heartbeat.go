package redisstate

import (
	"bytes"
	"cmp"
	"compress/flate"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/admin"
)

// nodesTag is the hash tag of the heartbeat keys.
const nodesTag = "n"

const (
	// DefaultHeartbeatInterval is how often a node beats. A node that
	// misses three beats in a row (HeartbeatTTL) is gone.
	DefaultHeartbeatInterval = 2 * time.Second
	// heartbeatBeats is the TTL of a beat, in beats.
	heartbeatBeats = 3
	// DefaultSessionsRefresh is how many beats a node's session list may
	// go unwritten while the sessions themselves (who, from where, since
	// when) do not change: only their byte counters, which others then
	// see up to this many beats late.
	DefaultSessionsRefresh = 5
	// maxSessionsBlob bounds an inflated session list read from Redis.
	maxSessionsBlob = 256 << 20
	// sessionsFormat starts a session list blob: the encoding's version.
	sessionsFormat = 'a'
)

// beatLua is one heartbeat. KEYS: the zset of nodes (score: last beat,
// Redis's clock), this node's info hash, this node's session list.
// ARGV: node name, TTL (ms), instance, pid, start (unix ms), number of
// sessions, session list blob ("" keeps the stored one and only renews
// its TTL). It returns the nodes alive, whether the session list is
// stored (0 when it was missing and not sent: Redis lost it), and the
// instance that wrote this node's info before (two nodes with one name
// overwrite each other's).
const beatLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local prev = redis.call('HGET', KEYS[2], 'inst') or ''
redis.call('HSET', KEYS[2], 'inst', ARGV[3], 'pid', ARGV[4], 'started', ARGV[5], 'beat', now, 'sessions', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ttl)
local stored = 1
if ARGV[7] ~= '' then
  redis.call('SET', KEYS[3], ARGV[7], 'PX', ttl)
else
  stored = redis.call('PEXPIRE', KEYS[3], ttl)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
redis.call('PEXPIRE', KEYS[1], ttl)
return {redis.call('ZCARD', KEYS[1]), stored, prev}
`

// leaveLua removes this node's heartbeat (KEYS as beatLua's; ARGV: node
// name, instance) unless another instance of the name wrote it since.
const leaveLua = `
if redis.call('HGET', KEYS[2], 'inst') == ARGV[2] then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
`

// HeartbeatOptions configure NewHeartbeat. The zero value is the
// defaults.
type HeartbeatOptions struct {
	// Interval between beats; default DefaultHeartbeatInterval.
	Interval time.Duration
	// SessionsRefresh: an unchanged session list is rewritten every
	// this many beats (for its byte counters); default
	// DefaultSessionsRefresh.
	SessionsRefresh int
}

// NodeInfo is one live node, as its last heartbeat describes it.
type NodeInfo struct {
	// Name is the node's [redis] node.
	Name string
	// PID is its process id on its host.
	PID int
	// Started is when its process started.
	Started time.Time
	// Beat is its last heartbeat, by Redis's clock.
	Beat time.Time
	// Sessions is how many live sessions it had then.
	Sessions int
}

// Heartbeat announces this node to the others through Redis and sees
// theirs. Every Interval it writes, in one script (one round trip):
//
//   - <prefix>{n}:nodes, a sorted set of node names scored by their last
//     beat (Redis's clock, so the nodes' clocks may differ); names
//     silent for three beats are trimmed;
//   - <prefix>{n}:info:<node>, a hash: instance, pid, start, last beat,
//     number of sessions;
//   - <prefix>{n}:sess:<node>, the node's live sessions, compact
//     (fields separated by control characters, deflated): some 25 bytes
//     a session, 250 kB for 10,000; it is rewritten only when the
//     sessions changed (a login or logout; byte counters aside) or
//     every SessionsRefresh beats, else its TTL is renewed.
//
// Every key's TTL is three beats, so a node that dies disappears from
// `kanmon sessions` within three beats, and from NodesAlive within six
// (see there). Close (a clean stop) removes the node at once.
//
// While Redis does not answer, beats are skipped and NodesAlive keeps
// its last value; beats resume by themselves when Redis is back, and a
// session list Redis lost (a restart without persistence) is rewritten
// at the first beat that notices.
type Heartbeat struct {
	c        *Client
	log      *slog.Logger
	sessions atomic.Pointer[func() []admin.Session] // set by Start
	every    time.Duration
	refresh  int
	ttl      time.Duration
	inst     string
	pid      int
	started  time.Time

	nodesKey, infoKey, sessKey string
	beatScript, leaveScript    *redis.Script

	alive atomic.Int64

	// Owned by the beat goroutine.
	lastPrint   uint64                // fingerprint of the sessions last written
	sinceWrite  int                   // beats since the list was last written
	mustWrite   bool                  // write the list at the next beat
	beaten      bool                  // a beat of this instance has succeeded
	counts      [heartbeatBeats]int64 // nodes alive at the last beats, a ring
	beats       int                   // successful beats, the ring's position
	warnedTwin  bool                  // a same-name node was reported
	warnedFail  bool                  // a failed beat was reported
	compressor  *flate.Writer
	compressBuf bytes.Buffer

	startOnce sync.Once // Start, or a halt before it
	stopOnce  sync.Once
	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewHeartbeat returns the heartbeat of c's node, not beating yet: its
// NodesAlive (1 until the first beat) can go to the lockout before the
// server whose sessions Start needs exists. Close stops it and removes
// the node; it does not close c.
func NewHeartbeat(c *Client, opts HeartbeatOptions, log *slog.Logger) *Heartbeat {
	if opts.Interval <= 0 {
		opts.Interval = DefaultHeartbeatInterval
	}
	if opts.SessionsRefresh <= 0 {
		opts.SessionsRefresh = DefaultSessionsRefresh
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	h := &Heartbeat{
		c:           c,
		log:         log.With("component", "redis-heartbeat", "node", c.Node()),
		every:       opts.Interval,
		refresh:     opts.SessionsRefresh,
		ttl:         heartbeatBeats * opts.Interval,
		inst:        hex.EncodeToString(b[:]),
		pid:         os.Getpid(),
		started:     time.Now(),
		nodesKey:    c.Key(nodesTag, "nodes"),
		infoKey:     c.Key(nodesTag, "info", c.Node()),
		sessKey:     c.Key(nodesTag, "sess", c.Node()),
		beatScript:  redis.NewScript(beatLua),
		leaveScript: redis.NewScript(leaveLua),
		mustWrite:   true,
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	h.alive.Store(1)
	h.compressor, _ = flate.NewWriter(&h.compressBuf, flate.BestSpeed)
	c.OnHealth(func(up bool) {
		if up {
			select {
			case h.kick <- struct{}{}:
			default:
			}
		}
	})
	return h
}

// Start beats at once, and then every Interval. sessions returns this
// node's live sessions; it is called at each beat and by Sessions. Only
// the first Start counts.
func (h *Heartbeat) Start(sessions func() []admin.Session) {
	h.startOnce.Do(func() {
		h.sessions.Store(&sessions)
		go h.run()
	})
}

func (h *Heartbeat) run() {
	defer close(h.done)
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		h.beat()
		select {
		case <-h.stop:
			return
		case <-t.C:
		case <-h.kick:
		}
	}
}

// NodesAlive returns how many nodes beat within the last three beats:
// the most seen by this node's last three successful beats, so that a
// Redis that restarts empty (the nodes beat again one by one) does not
// make it dip; at least 1. While Redis does not answer it keeps the last
// value.
func (h *Heartbeat) NodesAlive() int { return int(h.alive.Load()) }

// beat writes one heartbeat.
func (h *Heartbeat) beat() {
	if !h.c.Up() {
		h.mustWrite = true
		return
	}
	list := (*h.sessions.Load())()
	fp := fingerprint(list)
	send := h.mustWrite || fp != h.lastPrint || h.sinceWrite+1 >= h.refresh
	res, err := h.runBeat(list, send)
	if err == nil && !send && !res.stored {
		// Redis lost the list (restarted empty): write it now.
		send = true
		res, err = h.runBeat(list, true)
	}
	if err != nil {
		h.mustWrite = true
		// The Client logs an outage (and is down then); report
		// anything else once.
		if h.c.Up() && !h.warnedFail {
			h.warnedFail = true
			h.log.Warn("heartbeat failed", "err", err)
		}
		return
	}
	h.warnedFail = false
	if send {
		h.lastPrint, h.sinceWrite, h.mustWrite = fp, 0, false
	} else {
		h.sinceWrite++
	}
	h.counts[h.beats%len(h.counts)] = res.alive
	h.beats++
	h.alive.Store(max(slices.Max(h.counts[:]), 1))
	if h.beaten && res.prev != "" && res.prev != h.inst && !h.warnedTwin {
		h.warnedTwin = true
		h.log.Warn("another kanmon node beats under this node's name: give each node its own [redis] node", "node", h.c.Node())
	}
	h.beaten = true
}

type beatResult struct {
	alive  int64
	stored bool
	prev   string
}

// runBeat runs beatLua, with the session list when send is set.
func (h *Heartbeat) runBeat(list []admin.Session, send bool) (beatResult, error) {
	var blob string
	if send {
		blob = h.encode(list)
	}
	var v []any
	err := h.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		v, err = h.beatScript.Run(ctx, h.c.Redis(),
			[]string{h.nodesKey, h.infoKey, h.sessKey},
			h.c.Node(), h.ttl.Milliseconds(), h.inst, h.pid, h.started.UnixMilli(), len(list), blob).Slice()
		return err
	})
	if err != nil {
		return beatResult{}, err
	}
	// Checked outside Do: a strange reply is not Redis being down.
	if len(v) != 3 {
		return beatResult{}, fmt.Errorf("heartbeat: unexpected reply %v", v)
	}
	var res beatResult
	res.alive, _ = v[0].(int64)
	stored, _ := v[1].(int64)
	res.stored = stored == 1
	res.prev, _ = v[2].(string)
	return res, nil
}

// Nodes returns the live nodes, sorted by name.
func (h *Heartbeat) Nodes(ctx context.Context) ([]NodeInfo, error) {
	infos, _, err := h.read(ctx, false)
	return infos, err
}

// Sessions returns the live sessions of every live node, this node's
// from the registry (live byte counters), the others' from their last
// written list; sorted by node, then login time. While Redis does not
// answer, it returns this node's sessions and an *admin.PartialError
// saying the others' are missing.
func (h *Heartbeat) Sessions(ctx context.Context) ([]admin.Session, error) {
	var own []admin.Session
	if f := h.sessions.Load(); f != nil {
		own = (*f)()
	}
	for i := range own {
		own[i].Node = h.c.Node()
	}
	_, others, err := h.read(ctx, true)
	if err != nil {
		sortSessions(own)
		return own, &admin.PartialError{Err: fmt.Errorf("only this node's (%s) sessions: the other nodes' are in Redis, which does not answer: %w", h.c.Node(), err)}
	}
	list := append(own, others...)
	sortSessions(list)
	return list, nil
}

func sortSessions(list []admin.Session) {
	slices.SortStableFunc(list, func(a, b admin.Session) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), a.Since.Compare(b.Since), strings.Compare(a.User, b.User))
	})
}

// read fetches the live nodes' info and, with withSessions, the other
// nodes' sessions: two round trips (the names, then a pipeline).
func (h *Heartbeat) read(ctx context.Context, withSessions bool) ([]NodeInfo, []admin.Session, error) {
	var infos []NodeInfo
	var sessions []admin.Session
	err := h.c.Do(ctx, func(ctx context.Context) error {
		rdb := h.c.Redis()
		names, err := rdb.ZRange(ctx, h.nodesKey, 0, -1).Result()
		if err != nil || len(names) == 0 {
			return err
		}
		pipe := rdb.Pipeline()
		infoCmds := make([]*redis.MapStringStringCmd, len(names))
		sessCmds := make([]*redis.StringCmd, len(names))
		for i, name := range names {
			infoCmds[i] = pipe.HGetAll(ctx, h.c.Key(nodesTag, "info", name))
			if withSessions && name != h.c.Node() {
				sessCmds[i] = pipe.Get(ctx, h.c.Key(nodesTag, "sess", name))
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i, name := range names {
			m := infoCmds[i].Val()
			if len(m) == 0 {
				continue // its beat expired: the node is gone
			}
			infos = append(infos, nodeInfo(name, m))
			if sessCmds[i] == nil {
				continue
			}
			blob, err := sessCmds[i].Bytes()
			if err != nil {
				continue // not written yet, or lost: its next beat writes it
			}
			list, err := decodeSessions(blob, name)
			if err != nil {
				h.log.Warn("unreadable session list in Redis", "of", name, "err", err)
				continue
			}
			sessions = append(sessions, list...)
		}
		return nil
	})
	slices.SortFunc(infos, func(a, b NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, sessions, err
}

func nodeInfo(name string, m map[string]string) NodeInfo {
	n := NodeInfo{Name: name}
	n.PID, _ = strconv.Atoi(m["pid"])
	if ms, err := strconv.ParseInt(m["started"], 10, 64); err == nil {
		n.Started = time.UnixMilli(ms)
	}
	if ms, err := strconv.ParseInt(m["beat"], 10, 64); err == nil {
		n.Beat = time.UnixMilli(ms)
	}
	n.Sessions, _ = strconv.Atoi(m["sessions"])
	return n
}

// Close stops beating and removes this node from Redis (unless Redis
// does not answer: then its keys expire within three beats).
func (h *Heartbeat) Close() error {
	var err error
	h.closeOnce.Do(func() {
		h.halt()
		err = h.c.Do(context.Background(), func(ctx context.Context) error {
			return h.leaveScript.Run(ctx, h.c.Redis(), []string{h.nodesKey, h.infoKey, h.sessKey}, h.c.Node(), h.inst).Err()
		})
		if err != nil {
			err = fmt.Errorf("heartbeat: leaving: %w", err)
		}
	})
	return err
}

// halt stops the beat goroutine and leaves the keys to expire, as a
// node that dies would.
func (h *Heartbeat) halt() {
	h.startOnce.Do(func() { close(h.done) }) // never started: nothing to wait for
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.done
}

// Session list encoding: the format byte, then deflate of the sessions,
// each a record of fields separated by unitSep and ended by recordSep:
// user, protocol, client IP, method, app, client, login time (unix
// seconds), bytes in, bytes out.
const (
	unitSep   = '\x1f'
	recordSep = '\x1e'
	numFields = 9
)

// clean keeps the separators out of a field.
func clean(s string) string {
	if !strings.ContainsAny(s, "\x1e\x1f") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == unitSep || r == recordSep {
			return '?'
		}
		return r
	}, s)
}

// encode returns the blob of list. Only the beat goroutine calls it.
func (h *Heartbeat) encode(list []admin.Session) string {
	h.compressBuf.Reset()
	h.compressBuf.WriteByte(sessionsFormat)
	h.compressor.Reset(&h.compressBuf)
	if err := writeSessions(h.compressor, list); err != nil {
		return "" // a bytes.Buffer does not fail
	}
	_ = h.compressor.Close()
	return h.compressBuf.String()
}

func writeSessions(w io.Writer, list []admin.Session) error {
	var rec []byte
	for _, s := range list {
		rec = rec[:0]
		for _, f := range [...]string{s.User, s.Protocol, s.ClientIP, s.Method, s.App, s.Client} {
			rec = append(rec, clean(f)...)
			rec = append(rec, unitSep)
		}
		rec = strconv.AppendInt(rec, s.Since.Unix(), 10)
		rec = append(rec, unitSep)
		rec = strconv.AppendInt(rec, s.BytesIn, 10)
		rec = append(rec, unitSep)
		rec = strconv.AppendInt(rec, s.BytesOut, 10)
		rec = append(rec, recordSep)
		if _, err := w.Write(rec); err != nil {
			return err
		}
	}
	return nil
}

// decodeSessions reads a blob written by encode, naming node as the
// sessions' node.
func decodeSessions(blob []byte, node string) ([]admin.Session, error) {
	if len(blob) == 0 || blob[0] != sessionsFormat {
		return nil, errors.New("unknown session list format")
	}
	r := flate.NewReader(bytes.NewReader(blob[1:]))
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxSessionsBlob+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSessionsBlob {
		return nil, errors.New("session list too large")
	}
	var out []admin.Session
	for rec := range strings.SplitSeq(string(data), string(recordSep)) {
		if rec == "" {
			continue
		}
		f := strings.Split(rec, string(unitSep))
		if len(f) != numFields {
			return nil, fmt.Errorf("session record of %d fields, want %d", len(f), numFields)
		}
		since, err1 := strconv.ParseInt(f[6], 10, 64)
		in, err2 := strconv.ParseInt(f[7], 10, 64)
		outB, err3 := strconv.ParseInt(f[8], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, err
		}
		out = append(out, admin.Session{
			Node: node, User: f[0], Protocol: f[1], ClientIP: f[2], Method: f[3], App: f[4], Client: f[5],
			Since: time.Unix(since, 0), BytesIn: in, BytesOut: outB,
		})
	}
	return out, nil
}

// fingerprint sums a hash of each session's identity (byte counters
// aside), so that it does not depend on the list's order.
func fingerprint(list []admin.Session) uint64 {
	sum := uint64(len(list))
	h := fnv.New64a()
	var num [8]byte
	for _, s := range list {
		h.Reset()
		for _, f := range [...]string{s.User, s.Protocol, s.ClientIP, s.Method, s.App, s.Client} {
			_, _ = io.WriteString(h, f)
			_, _ = h.Write([]byte{0})
		}
		ns := s.Since.UnixNano()
		for i := range num {
			num[i] = byte(ns >> (8 * i))
		}
		_, _ = h.Write(num[:])
		sum += h.Sum64()
	}
	return sum
}
