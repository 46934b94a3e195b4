package redisstate

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/lockout"
)

// scanCount is the COUNT hint of the SCANs of Clear.
const scanCount = 1000

// List returns the locks in force in the whole cluster, from each
// scope's lock set; this node's own while Redis is down.
func (l *Lockout) List() []lockout.Entry {
	var out []lockout.Entry
	err := l.c.Do(context.Background(), func(ctx context.Context) error {
		out = out[:0]
		now := time.Now()
		for s := lockout.ScopeAccountIP; s <= lockout.ScopePrefix; s++ {
			zs, err := l.c.rdb.ZRangeByScoreWithScores(ctx, l.key("locks", strconv.Itoa(int(s))),
				&redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
			if err != nil {
				return err
			}
			if len(zs) == 0 {
				continue
			}
			cmds, err := l.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, z := range zs {
					p.HMGet(ctx, l.counterKey(s, z.Member.(string)), "s", "c", "p", "u", "v", "n")
				}
				return nil
			})
			if err != nil {
				return err
			}
			_, w := l.local.Threshold(s)
			for i, z := range zs {
				vals := cmds[i].(*redis.SliceCmd).Val()
				f := make([]int64, len(vals))
				for j, v := range vals {
					if str, ok := v.(string); ok {
						f[j], _ = strconv.ParseInt(str, 10, 64)
					}
				}
				if len(f) < 6 || f[3] <= now.UnixMilli() {
					continue // cleared or ended since the set was read
				}
				e := lockout.Entry{Scope: s, Until: time.UnixMilli(f[3]), Level: int(f[4]),
					Failures: estimate(f[0], f[1], f[2], now.UnixMilli(), w.Milliseconds())}
				setSubject(&e, z.Member.(string))
				if s == lockout.ScopeAccount {
					e.Consecutive = int(f[5])
				}
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return l.local.List()
	}
	slices.SortFunc(out, func(a, b lockout.Entry) int {
		return cmp.Or(cmp.Compare(a.Scope, b.Scope), strings.Compare(a.String(), b.String()))
	})
	return out
}

// estimate is the sliding-window count of a counter (lockout's
// counter.estimate, on the hash's fields), in milliseconds.
func estimate(start, cur, prev, now, window int64) int {
	bucket := now - now%window
	if bucket > start {
		if bucket == start+window {
			prev, cur = cur, 0
		} else {
			prev, cur = 0, 0
		}
		start = bucket
	}
	elapsed := max(now-start, 0)
	if elapsed >= window {
		return int(cur)
	}
	return int(cur + prev*(window-elapsed)/window)
}

// setSubject fills e's user, address or prefix from a scope's subject.
func setSubject(e *lockout.Entry, subject string) {
	switch e.Scope {
	case lockout.ScopeAccountIP:
		user, ip, _ := strings.Cut(subject, "\x00")
		e.User = user
		e.IP, _ = netip.ParseAddr(ip)
	case lockout.ScopeAccount:
		e.User = subject
	case lockout.ScopeIP:
		e.IP, _ = netip.ParseAddr(subject)
	case lockout.ScopePrefix:
		e.Prefix, _ = netip.ParsePrefix(subject)
	}
}

// LockCounts returns the locks in force per scope in the whole cluster;
// this node's own while Redis is down.
func (l *Lockout) LockCounts() map[string]int {
	out := make(map[string]int, 4)
	err := l.c.Do(context.Background(), func(ctx context.Context) error {
		from := "(" + strconv.FormatInt(time.Now().UnixMilli(), 10)
		cmds, err := l.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for s := lockout.ScopeAccountIP; s <= lockout.ScopePrefix; s++ {
				p.ZCount(ctx, l.key("locks", strconv.Itoa(int(s))), from, "+inf")
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, c := range cmds {
			out[(lockout.ScopeAccountIP + lockout.Scope(i)).String()] = int(c.(*redis.IntCmd).Val())
		}
		return nil
	})
	if err != nil {
		return l.local.LockCounts()
	}
	return out
}

// Clear is lockout.Guard.Clear on the whole cluster (and this node's
// Guard): it scans the counters in Redis for the target's, and removes
// them with their locks.
func (l *Lockout) Clear(target string) int {
	removed := l.local.Clear(target)
	inScope, user := lockout.ClearMatcher(target)
	shared := 0
	counters := l.key("c") + ":"
	err := l.c.Do(context.Background(), func(ctx context.Context) error {
		if user != "" {
			n, err := l.c.rdb.Del(ctx, l.key("f", user)).Result()
			if err != nil {
				return err
			}
			shared += int(n)
		}
		iter := l.c.rdb.Scan(ctx, 0, escapeGlob(counters)+"*", scanCount).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			scopeText, subject, ok := strings.Cut(strings.TrimPrefix(key, counters), ":")
			s, err := strconv.Atoi(scopeText)
			if !ok || err != nil || !inScope(lockout.Scope(s), subject) {
				continue
			}
			n, err := l.c.rdb.Del(ctx, key).Result()
			if err != nil {
				return err
			}
			l.c.rdb.ZRem(ctx, l.key("locks", scopeText), subject)
			shared += int(n)
		}
		return iter.Err()
	})
	l.seenMu.Lock()
	for k := range l.seen {
		if inScope(k.scope, k.subject) {
			delete(l.seen, k)
		}
	}
	l.seenMu.Unlock()
	if err != nil {
		return removed
	}
	return max(removed, shared)
}

// escapeGlob escapes the characters SCAN's MATCH treats as a pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
