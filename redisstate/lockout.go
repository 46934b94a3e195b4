package redisstate

import (
	"context"
	_ "embed" // the lockout's Lua scripts
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/lockout"
)

//go:embed lockout.lua
var lockoutLua string

// lockoutTag is the hash tag of every lockout key: one script touches
// the four scopes' counters at once, so they must share a slot.
const lockoutTag = "l"

// successQueue bounds the successes waiting to be written; successBatch
// is the most written in one pipeline.
const (
	successQueue = 4096
	successBatch = 256
)

// seenLocksMax bounds the locks remembered from Redis for a Redis outage.
const seenLocksMax = 65536

// Lockout is a lockout.Enforcer whose counters, locks, stale-secret
// fingerprints and known-good addresses live in Redis, shared by every
// node: thresholds are global. Each Check is one round trip (a script
// reading all scopes), each Failure one; successes are written in
// batches, in the background.
//
// It keeps this node's own lockout.Guard (bbolt) up to date alongside:
// while Redis does not answer, with on_failure = local, Check and
// Failure use that Guard with its thresholds divided by the nodes alive
// at the last heartbeat, and the locks seen in Redis stay in force; with
// on_failure = closed, Check says Unavailable (the protocol's temporary
// error). When Redis answers again, shared enforcement resumes.
type Lockout struct {
	c      *Client
	local  *lockout.Guard
	opts   lockout.Options
	closed bool // on_failure = closed
	log    *slog.Logger

	check, failure, success *redis.Script

	seenMu sync.Mutex
	seen   map[seenKey]time.Time // locks seen in Redis, kept through an outage

	successes chan lockout.Keys
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ lockout.Enforcer = (*Lockout)(nil)

// seenKey names a lock: its scope and subject.
type seenKey struct {
	scope   lockout.Scope
	subject string
}

// NewLockout shares local's rules through c. onFailure is config's
// RedisOnFailureLocal or RedisOnFailureClosed; nodesAlive returns the
// nodes alive at the last heartbeat (at least 1), read when Redis stops
// answering. Close stops its writer; it does not close local or c.
func NewLockout(c *Client, local *lockout.Guard, onFailure string, nodesAlive func() int, log *slog.Logger) *Lockout {
	scripts := splitScripts(lockoutLua)
	l := &Lockout{
		c: c, local: local, opts: local.Options(), closed: onFailure == config.RedisOnFailureClosed,
		log:       log.With("component", "lockout"),
		check:     redis.NewScript(scripts["now"] + scripts["check"]),
		failure:   redis.NewScript(scripts["now"] + scripts["failure"]),
		success:   redis.NewScript(scripts["now"] + scripts["success"]),
		seen:      make(map[seenKey]time.Time),
		successes: make(chan lockout.Keys, successQueue),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	setDivisor := func(up bool) {
		if up {
			local.SetDivisor(1)
			return
		}
		local.SetDivisor(nodesAlive())
	}
	c.OnHealth(setDivisor)
	setDivisor(c.Up())
	go l.writeSuccesses()
	return l
}

// splitScripts cuts the Lua file into its "--! name" sections.
func splitScripts(src string) map[string]string {
	out := map[string]string{}
	name := ""
	for _, part := range strings.SplitAfter(src, "\n") {
		if n, ok := strings.CutPrefix(part, "--! "); ok {
			name = strings.TrimSpace(n)
			continue
		}
		out[name] += part
	}
	return out
}

// key returns a lockout key: Key("l", kind, parts...).
func (l *Lockout) key(kind string, parts ...string) string {
	return l.c.Key(lockoutTag, append([]string{kind}, parts...)...)
}

// counterKey is the key of scope s's counter for subject.
func (l *Lockout) counterKey(s lockout.Scope, subject string) string {
	return l.key("c", strconv.Itoa(int(s)), subject)
}

// scopeKeys returns the four counters' keys (a placeholder where a scope
// does not apply) and the mask saying which apply.
func (l *Lockout) scopeKeys(k lockout.Keys) (keys []string, mask string) {
	var m [4]byte
	for s := lockout.ScopeAccountIP; s <= lockout.ScopePrefix; s++ {
		subj := k.Scope(s)
		if subj == "" {
			keys = append(keys, l.key("none"))
			m[s-1] = '0'
			continue
		}
		keys = append(keys, l.counterKey(s, subj))
		m[s-1] = '1'
	}
	return keys, string(m[:])
}

func millis(d time.Duration) int64 { return d.Milliseconds() }

// Check is lockout.Guard.Check, on the shared state.
func (l *Lockout) Check(user string, ip netip.Addr, secret string) lockout.Verdict {
	k := l.local.Keys(user, ip)
	fp := ""
	if secret != "" {
		sum := l.local.Fingerprint(k.User(), secret)
		fp = hex.EncodeToString(sum[:])
	}
	keys, mask := l.scopeKeys(k)
	keys = append(keys, l.key("f", k.User()), l.key("g", k.AccountIP()))
	var res []int64
	err := l.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		res, err = l.check.Run(ctx, l.c.rdb, keys, mask, fp, millis(l.opts.RecheckInterval), millis(l.opts.FingerprintTTL), millis(l.opts.KnownGoodTTL)).Int64Slice()
		return err
	})
	if err == nil && len(res) != 4 {
		err = fmt.Errorf("redis: lockout check answered %d values", len(res))
	}
	if err != nil {
		return l.fallbackCheck(user, ip, secret, k, err)
	}
	switch res[0] {
	case 1:
		s := lockout.Scope(res[1])
		until := time.UnixMilli(res[2])
		l.remember(s, k.Scope(s), until)
		return lockout.Verdict{Outcome: lockout.Locked, Scope: s, Until: until}
	case 2:
		return lockout.Verdict{Outcome: lockout.Stale}
	}
	return lockout.Verdict{Outcome: lockout.Allow, Recheck: res[3] == 1}
}

// fallbackCheck answers while Redis does not: Unavailable with
// on_failure = closed; else this node's Guard, then the locks seen in
// Redis before it went away (the account, IP and prefix ones not for an
// address known-good for the account).
func (l *Lockout) fallbackCheck(user string, ip netip.Addr, secret string, k lockout.Keys, err error) lockout.Verdict {
	if l.closed {
		return lockout.Verdict{Outcome: lockout.Unavailable, Err: err}
	}
	if v := l.local.Check(user, ip, secret); v.Outcome != lockout.Allow {
		return v
	}
	now := time.Now()
	good := l.local.KnownGood(user, ip)
	l.seenMu.Lock()
	defer l.seenMu.Unlock()
	for s := lockout.ScopeAccountIP; s <= lockout.ScopePrefix; s++ {
		if s != lockout.ScopeAccountIP && good {
			break
		}
		if until, ok := l.seen[seenKey{s, k.Scope(s)}]; ok && until.After(now) {
			return lockout.Verdict{Outcome: lockout.Locked, Scope: s, Until: until}
		}
	}
	return lockout.Verdict{Outcome: lockout.Allow}
}

// remember keeps a lock seen in Redis for an outage, dropping expired
// ones (or, when full, any one) to stay within seenLocksMax.
func (l *Lockout) remember(s lockout.Scope, subject string, until time.Time) {
	if subject == "" || l.closed {
		return
	}
	now := time.Now()
	l.seenMu.Lock()
	defer l.seenMu.Unlock()
	if len(l.seen) >= seenLocksMax {
		for k, u := range l.seen {
			if !u.After(now) || len(l.seen) >= seenLocksMax {
				delete(l.seen, k)
			}
			if len(l.seen) < seenLocksMax/2 {
				break
			}
		}
	}
	l.seen[seenKey{s, subject}] = until
}

// Failure is lockout.Guard.Failure, on the shared state. This node's
// Guard records it too, for an outage.
func (l *Lockout) Failure(user string, ip netip.Addr, secret string) lockout.FailureInfo {
	localInfo := l.local.Failure(user, ip, secret)
	k := l.local.Keys(user, ip)
	fp := ""
	if secret != "" {
		sum := l.local.Fingerprint(k.User(), secret)
		fp = hex.EncodeToString(sum[:])
	}
	keys, mask := l.scopeKeys(k)
	keys = append(keys, l.key("f", k.User()))
	for s := lockout.ScopeAccountIP; s <= lockout.ScopePrefix; s++ {
		keys = append(keys, l.key("locks", strconv.Itoa(int(s))))
	}
	o := &l.opts
	args := []any{mask, fp, millis(o.FingerprintTTL), o.Fingerprints,
		o.AccountIPThreshold, o.AccountThreshold, o.IPThreshold, o.PrefixThreshold,
		millis(o.AccountIPWindow), millis(o.AccountWindow), millis(o.IPWindow), millis(o.PrefixWindow),
		o.MaxAccountFailures, millis(o.FailureMemory), millis(o.LockMin), millis(o.LockMax), millis(o.LockMemory)}
	for s := lockout.ScopeAccountIP; s <= lockout.ScopePrefix; s++ {
		args = append(args, k.Scope(s))
	}
	var res []int64
	err := l.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		res, err = l.failure.Run(ctx, l.c.rdb, keys, args...).Int64Slice()
		return err
	})
	if err == nil && len(res) != 8 {
		err = fmt.Errorf("redis: lockout failure answered %d values", len(res))
	}
	if err != nil {
		return localInfo
	}
	info := lockout.FailureInfo{
		Counted:   res[0] == 1,
		AccountIP: int(res[1]), Account: int(res[2]), IP: int(res[3]), Prefix: int(res[4]),
		Consecutive: int(res[5]),
		Locked:      lockout.Scope(res[6]),
	}
	if info.Locked != lockout.ScopeNone {
		info.Until = time.UnixMilli(res[7])
		l.remember(info.Locked, k.Scope(info.Locked), info.Until)
	}
	return info
}

// FailureAddress is lockout.Guard.FailureAddress, on the shared state.
func (l *Lockout) FailureAddress(ip netip.Addr) lockout.FailureInfo {
	return l.Failure("", ip, "")
}

// Success is lockout.Guard.Success: this node's Guard records it at once,
// the shared state within a batch.
func (l *Lockout) Success(user string, ip netip.Addr) {
	l.local.Success(user, ip)
	select {
	case l.successes <- l.local.Keys(user, ip):
	default:
		// The queue is full: Redis is slow or away. The success still
		// counts on this node; the shared state misses it.
	}
}

// writeSuccesses writes queued successes in batches: from the first one
// queued it gathers for BatchDelay (or until successBatch are waiting),
// then writes them in one pipeline, so that logins arriving together
// share a round trip to Redis. A success reaches the other nodes at most
// BatchDelay (100 ms by default) plus a round trip late; this node's
// Guard has it at once.
func (l *Lockout) writeSuccesses() {
	defer close(l.done)
	batch := make([]lockout.Keys, 0, successBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-l.stop:
			timer.Stop()
			for {
				select {
				case k := <-l.successes:
					batch = append(batch, k)
					if len(batch) == successBatch {
						l.writeBatch(batch)
						batch = batch[:0]
					}
				default:
					l.writeBatch(batch)
					return
				}
			}
		case k := <-l.successes:
			batch = append(batch, k)
			switch {
			case len(batch) == successBatch:
				timer.Stop()
				l.writeBatch(batch)
				batch = batch[:0]
			case len(batch) == 1:
				timer.Reset(l.opts.BatchDelay)
			}
		case <-timer.C:
			l.writeBatch(batch)
			batch = batch[:0]
		}
	}
}

// writeBatch writes successes in one pipeline (the script by its SHA,
// loaded first when Redis does not know it: after a failover, say).
func (l *Lockout) writeBatch(batch []lockout.Keys) {
	if len(batch) == 0 || !l.c.Up() {
		return
	}
	refresh := millis(l.opts.KnownGoodTTL) / 720
	run := func(ctx context.Context, evalsha bool) error {
		_, err := l.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range batch {
				keys := []string{
					l.key("f", k.User()), l.counterKey(lockout.ScopeAccountIP, k.AccountIP()),
					l.counterKey(lockout.ScopeAccount, k.User()), l.key("g", k.AccountIP()),
					l.key("gi", k.IP().String()), l.key("locks", "1"),
				}
				if evalsha {
					l.success.EvalSha(ctx, p, keys, millis(l.opts.KnownGoodTTL), refresh, k.AccountIP())
				} else {
					l.success.Eval(ctx, p, keys, millis(l.opts.KnownGoodTTL), refresh, k.AccountIP())
				}
			}
			return nil
		})
		return err
	}
	_ = l.c.Do(context.Background(), func(ctx context.Context) error {
		err := run(ctx, true)
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = run(ctx, false)
		}
		return err
	})
}

// KnownGoodIP reports whether some account logged in from ip within
// KnownGoodTTL, on this node or (asked of Redis) any other.
func (l *Lockout) KnownGoodIP(ip netip.Addr) bool {
	if l.local.KnownGoodIP(ip) {
		return true
	}
	k := l.local.Keys("", ip)
	var n int64
	err := l.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		n, err = l.c.rdb.Exists(ctx, l.key("gi", k.IP().String())).Result()
		return err
	})
	return err == nil && n > 0
}

// SetExempt is lockout.Guard.SetExempt; the Guard computes the keys, so
// it holds the networks for both.
func (l *Lockout) SetExempt(prefixes []netip.Prefix) { l.local.SetExempt(prefixes) }

// ResetAccount forgets the account's remembered wrong secrets, here and
// in Redis.
func (l *Lockout) ResetAccount(user string) {
	l.local.ResetAccount(user)
	k := l.local.Keys(user, netip.Addr{})
	_ = l.c.Do(context.Background(), func(ctx context.Context) error {
		return l.c.rdb.Del(ctx, l.key("f", k.User())).Err()
	})
}

// Delay is lockout.Guard.Delay.
func (l *Lockout) Delay(n int) time.Duration { return l.local.Delay(n) }

// Close stops the success writer after writing what is queued.
func (l *Lockout) Close() error {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
	return nil
}
