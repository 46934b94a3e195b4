package redisstate

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/internal/userkey"
	"github.com/kanmon-mail/kanmon/otp"
)

// portalTag is the hash tag of the portal's keys: a session record, its
// user's index and the TOTP replay guard's last steps share one slot, so
// that each script below touches one slot (it also reaches records it
// finds in an index, by name: same slot, so Redis Cluster still serves
// them).
const portalTag = "p"

// The portal's keys, after the prefix and {p}:
//
//	s:<id>    a session record: the portal's sealed session, <id> the hex
//	          SHA-256 of its token (portal.SharedSessions); PX its
//	          remaining life
//	u:<user>  the sorted set of a user's record ids (user case-folded),
//	          scored by their expiry (Redis time, ms); PEXPIREAT its last
//	          one
//	t:<user>  the last TOTP time step accepted for a user; PX replayTTL
const (
	recordPart = "s"
	indexPart  = "u"
	stepPart   = "t"
)

// nowMS is the Lua prelude that sets now to Redis's own time in
// milliseconds, so that every node scores the indexes on one clock.
const nowMS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// reindex is the Lua that files record ARGV[id] in index KEYS[2] with
// expiry now+ttl and makes the index live as long as its last record.
const reindex = `redis.call('ZADD', KEYS[2], now + ttl, id)
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], math.floor(tonumber(last[2])))
`

// createScript stores a new record (KEYS[1]) in its user's index
// (KEYS[2]): it drops from the index the records gone or expired, then,
// while the user has perUser or more, the records that expire soonest
// (deleting them), then stores the record.
// ARGV: record, ttl ms, id, perUser, the records' key prefix.
var createScript = redis.NewScript(nowMS + `local ttl = tonumber(ARGV[2])
local id = ARGV[3]
local perUser = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', ARGV[5] .. m) == 0 then redis.call('ZREM', KEYS[2], m) end
end
local n = redis.call('ZCARD', KEYS[2])
if n >= perUser then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - perUser)) do
    redis.call('DEL', ARGV[5] .. m)
    redis.call('ZREM', KEYS[2], m)
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
` + reindex + `return 1`)

// swapScript replaces record KEYS[1] when it still holds ARGV[1] (a
// record deleted meanwhile stays deleted), and refiles it in index
// KEYS[2]. ARGV: old record, new record, ttl ms, id. Returns 1 when
// swapped, else 0.
var swapScript = redis.NewScript(`if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
` + nowMS + `local ttl = tonumber(ARGV[3])
local id = ARGV[4]
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
` + reindex + `return 1`)

// deleteOthersScript deletes every record in index KEYS[1] but ARGV[1],
// and returns how many existed. ARGV[2] is the records' key prefix.
var deleteOthersScript = redis.NewScript(`local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if m ~= ARGV[1] then
    n = n + redis.call('DEL', ARGV[2] .. m)
    redis.call('ZREM', KEYS[1], m)
  end
end
return n`)

// PortalSessions keeps the portal's session records in Redis, shared by
// every node (it is a portal.SharedSessions: give it as
// portal.Options.Sessions). What it stores is already sealed by the
// portal with a key derived from the session token, under the hex
// SHA-256 of that token: Redis holds no token, and nothing of a session
// (its user, CSRF token, a pending TOTP secret, one-time codes, a new
// app passcode) in clear; only the per-user index names the user, as
// the lockout's keys do. While Redis does not answer, every method
// returns an error (ErrDown at once), and the portal refuses, closed.
type PortalSessions struct{ c *Client }

// PortalSessions returns the portal's session store in c.
func (c *Client) PortalSessions() *PortalSessions { return &PortalSessions{c: c} }

func (p *PortalSessions) record(id string) string  { return p.c.Key(portalTag, recordPart, id) }
func (p *PortalSessions) index(user string) string { return p.c.Key(portalTag, indexPart, user) }

// recordPrefix is the key of a record without its id, for the scripts.
func (p *PortalSessions) recordPrefix() string { return p.c.Key(portalTag, recordPart) + ":" }

// Ping reports whether Redis answers now.
func (p *PortalSessions) Ping(ctx context.Context) error {
	return p.c.Do(ctx, func(ctx context.Context) error { return p.c.rdb.Ping(ctx).Err() })
}

// Load returns the record id, or nil when there is none.
func (p *PortalSessions) Load(ctx context.Context, id string) ([]byte, error) {
	var b []byte
	err := p.c.Do(ctx, func(ctx context.Context) error {
		var err error
		b, err = p.c.rdb.Get(ctx, p.record(id)).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return b, err
}

// ms is d in whole milliseconds, at least 1 (PX refuses 0).
func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Create stores rec as the record id of user (case-folded), expiring
// after ttl; when user has perUser records or more, those expiring
// soonest are deleted first, so that user keeps perUser at most. One
// round trip.
func (p *PortalSessions) Create(ctx context.Context, user, id string, rec []byte, ttl time.Duration, perUser int) error {
	return p.c.Do(ctx, func(ctx context.Context) error {
		return createScript.Run(ctx, p.c.rdb, []string{p.record(id), p.index(user)},
			rec, ms(ttl), id, max(perUser, 1), p.recordPrefix()).Err()
	})
}

// Swap replaces the record id of user by rec, expiring after ttl, when it
// still is old; false when it changed or is gone. One round trip.
func (p *PortalSessions) Swap(ctx context.Context, user, id string, old, rec []byte, ttl time.Duration) (bool, error) {
	var n int64
	err := p.c.Do(ctx, func(ctx context.Context) error {
		var err error
		n, err = swapScript.Run(ctx, p.c.rdb, []string{p.record(id), p.index(user)}, old, rec, ms(ttl), id).Int64()
		return err
	})
	return n == 1, err
}

// Delete removes the record id. Its user's index keeps the id until the
// next Create of that user drops it (the record is gone) or it expires.
func (p *PortalSessions) Delete(ctx context.Context, id string) error {
	return p.c.Do(ctx, func(ctx context.Context) error { return p.c.rdb.Del(ctx, p.record(id)).Err() })
}

// DeleteOthers removes every record of user (case-folded) but keep, and
// returns how many it removed. One round trip.
func (p *PortalSessions) DeleteOthers(ctx context.Context, user, keep string) (int, error) {
	var n int64
	err := p.c.Do(ctx, func(ctx context.Context) error {
		var err error
		n, err = deleteOthersScript.Run(ctx, p.c.rdb, []string{p.index(user)}, keep, p.recordPrefix()).Int64()
		return err
	})
	return int(n), err
}

// replayTTL is how long a user's last accepted TOTP step is kept: a code
// of step s verifies until the end of step s+Skew, at most (2·Skew+1)
// periods after it was first accepted, plus a period for clocks that
// differ between nodes.
const replayTTL = (2*otp.Skew + 2) * otp.Period

// claimScript accepts step ARGV[1] for the user of KEYS[1] only when it
// is after the last step accepted, and then records it (PX ARGV[2]): the
// read and the write are one atomic step, so that of two nodes given the
// same code at once, one accepts it. Returns 1 when accepted, else 0.
var claimScript = redis.NewScript(`local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// TOTPReplay is the TOTP replay guard of every node (an otp.Replay: give
// it as portal.Options.Replay): a code's time step is accepted once per
// user across the cluster, and never a step at or before the last one
// accepted. Redis holds the user name and the step number, no code. One
// round trip per code. While Redis does not answer, Claim returns the
// error (ErrDown at once), and the code is refused.
type TOTPReplay struct{ c *Client }

var _ otp.Replay = (*TOTPReplay)(nil)

// TOTPReplay returns the shared TOTP replay guard in c.
func (c *Client) TOTPReplay() *TOTPReplay { return &TOTPReplay{c: c} }

// Claim accepts step for user (case-folded), unless a step at or after it
// was accepted already, on any node.
func (r *TOTPReplay) Claim(user string, step int64) (bool, error) {
	var n int64
	err := r.c.Do(context.Background(), func(ctx context.Context) error {
		var err error
		n, err = claimScript.Run(ctx, r.c.rdb, []string{r.c.Key(portalTag, stepPart, userkey.Fold(user))},
			strconv.FormatInt(step, 10), replayTTL.Milliseconds()).Int64()
		return err
	})
	if err != nil {
		return false, err
	}
	return n == 1, nil
}
