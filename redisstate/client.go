// Package redisstate keeps the short-lived security state that several
// kanmon nodes share in Redis (or a Redis Sentinel set): the lockout's
// counters, locks, stale-secret fingerprints and known-good addresses,
// per-passcode last use, portal sessions, the TOTP replay guard and the
// nodes' heartbeats. See docs/cluster.md.
//
// Redis holds no secret: user names, keyed fingerprints (HMAC with the
// pepper), client addresses and hashes of portal session tokens with sealed session records. Keys
// carry TTLs, so nothing grows without bound, and all of a feature's keys
// share one hash tag ({l} for the lockout, {p} for the portal, {n} for
// nodes, {u} for last use), so that each multi-key script touches one
// slot and Redis Cluster stays possible.
//
// Client tracks whether Redis answers: the first failure is logged once
// at ERROR, a watcher pings until Redis is back (a Sentinel failover to
// a new master included), and then logs once at INFO. Callers ask Up()
// and report failures with Failed.
package redisstate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/config"
)

// Timeouts of one Redis command. A login waits on Redis at most this
// long before the node treats Redis as down and falls back (on_failure).
const (
	dialTimeout  = time.Second
	readTimeout  = 500 * time.Millisecond
	writeTimeout = 500 * time.Millisecond
	// probeInterval is how often the watcher pings a Redis it has seen
	// fail, until it answers again.
	probeInterval = 250 * time.Millisecond
)

// ErrDown is returned while Redis is known not to answer; the watcher
// clears it when a PING succeeds again.
var ErrDown = errors.New("redis: unavailable")

// Client is kanmon's connection to Redis, with the key prefix and the
// up/down state. Safe for concurrent use.
type Client struct {
	rdb    redis.UniversalClient
	prefix string
	node   string
	log    *slog.Logger

	down     atomic.Bool
	mu       sync.Mutex
	watching bool
	onHealth []func(up bool)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Open connects to the Redis of cfg. It does not fail when Redis is
// down: the Client starts down, and the watcher brings it up when Redis
// answers.
func Open(cfg *config.Redis, log *slog.Logger) (*Client, error) {
	rdb, err := newUniversal(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{rdb: rdb, prefix: cfg.KeyPrefix, node: cfg.Node, log: log.With("component", "redis"), ctx: ctx, cancel: cancel}
	pctx, pcancel := context.WithTimeout(ctx, 2*dialTimeout)
	defer pcancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		c.Failed(err)
	}
	return c, nil
}

// newUniversal builds the go-redis client of cfg: a failover client
// that follows the Sentinels' master, or a plain one for one URL.
func newUniversal(cfg *config.Redis) (redis.UniversalClient, error) {
	var tlsConf *tls.Config
	if cfg.TLS || strings.HasPrefix(cfg.URL, "rediss://") {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("redis: ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redis: ca_file %s holds no PEM certificate", cfg.CAFile)
			}
			tlsConf.RootCAs = pool
		}
	}
	if len(cfg.Sentinels) > 0 {
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       cfg.Master,
			SentinelAddrs:    cfg.Sentinels,
			SentinelPassword: cfg.SentinelPassword,
			Username:         cfg.Username,
			Password:         cfg.Password,
			DB:               cfg.DB,
			TLSConfig:        tlsConf,
			DialTimeout:      dialTimeout,
			ReadTimeout:      readTimeout,
			WriteTimeout:     writeTimeout,
			MaxRetries:       1,
			DisableIdentity:  true,
		}), nil
	}
	o, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: url: %w", err)
	}
	if cfg.Username != "" {
		o.Username = cfg.Username
	}
	o.Password = cfg.Password
	if tlsConf != nil {
		if o.TLSConfig != nil {
			tlsConf.ServerName = o.TLSConfig.ServerName
		}
		o.TLSConfig = tlsConf
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = dialTimeout, readTimeout, writeTimeout
	o.MaxRetries = 1
	o.DisableIdentity = true
	return redis.NewClient(o), nil
}

// Redis returns the go-redis client.
func (c *Client) Redis() redis.UniversalClient { return c.rdb }

// Node returns this node's name ([redis] node).
func (c *Client) Node() string { return c.node }

// Key returns the key for a feature's hash tag and the parts after it:
// Key("l", "c", "1", "alice") is "kanmon:{l}:c:1:alice".
func (c *Client) Key(tag string, parts ...string) string {
	var b strings.Builder
	b.WriteString(c.prefix)
	b.WriteString("{")
	b.WriteString(tag)
	b.WriteString("}")
	for _, p := range parts {
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// Up reports whether Redis answered the last command (or the watcher's
// last PING).
func (c *Client) Up() bool { return !c.down.Load() }

// OnHealth calls f with false when Redis stops answering and with true
// when it answers again.
func (c *Client) OnHealth(f func(up bool)) {
	c.mu.Lock()
	c.onHealth = append(c.onHealth, f)
	c.mu.Unlock()
}

// Failed reports a failed command. A redis.Nil answer or a script's own
// error reply is not a failure of Redis and is ignored. The first
// failure marks Redis down, logs once at ERROR, and starts the watcher.
func (c *Client) Failed(err error) {
	if err == nil || errors.Is(err, redis.Nil) || isReply(err) {
		return
	}
	if !c.down.CompareAndSwap(false, true) {
		return
	}
	c.log.Error("redis unavailable: shared state is not enforced until it answers again", "err", err)
	c.notify(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watching || c.ctx.Err() != nil {
		return
	}
	c.watching = true
	c.wg.Add(1)
	go c.watch()
}

// isReply tells an error Redis answered with (a script error, a wrong
// type) from one of reaching Redis. A READONLY or LOADING reply means the
// server is not the master any more, or not ready: that is a failure.
func isReply(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return !strings.HasPrefix(msg, "READONLY") && !strings.HasPrefix(msg, "LOADING") &&
		!strings.HasPrefix(msg, "MASTERDOWN") && !strings.HasPrefix(msg, "NOAUTH") &&
		!strings.HasPrefix(msg, "WRONGPASS") && !strings.HasPrefix(msg, "CLUSTERDOWN")
}

// Do runs f with a context bounded by the command timeouts, and reports
// its error with Failed. It returns ErrDown at once while Redis is down.
func (c *Client) Do(ctx context.Context, f func(context.Context) error) error {
	if c.down.Load() {
		return ErrDown
	}
	ctx, cancel := context.WithTimeout(ctx, readTimeout+writeTimeout)
	defer cancel()
	err := f(ctx)
	c.Failed(err)
	return err
}

// watch pings Redis until it answers, then marks it up.
func (c *Client) watch() {
	defer c.wg.Done()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, readTimeout+writeTimeout)
		err := c.rdb.Ping(ctx).Err()
		cancel()
		if err != nil {
			continue
		}
		c.mu.Lock()
		c.watching = false
		c.mu.Unlock()
		c.down.Store(false)
		c.log.Info("redis answers again: shared state enforced")
		c.notify(true)
		return
	}
}

func (c *Client) notify(up bool) {
	c.mu.Lock()
	fs := append([]func(bool){}, c.onHealth...)
	c.mu.Unlock()
	for _, f := range fs {
		f(up)
	}
}

// EvictionWarning returns a warning when Redis may evict kanmon's keys
// (maxmemory set with a policy other than noeviction), or "" when it
// can't (or Redis does not say: CONFIG may be refused by its ACL).
func (c *Client) EvictionWarning(ctx context.Context) string {
	var policy, maxmem string
	err := c.Do(ctx, func(ctx context.Context) error {
		m, err := c.rdb.ConfigGet(ctx, "maxmemory*").Result()
		policy, maxmem = m["maxmemory-policy"], m["maxmemory"]
		return err
	})
	if err != nil || policy == "" || policy == "noeviction" || maxmem == "0" || maxmem == "" {
		return ""
	}
	return fmt.Sprintf("redis: maxmemory-policy is %s with maxmemory %s: Redis may evict kanmon's lockout keys under memory pressure, which forgets locks; set maxmemory-policy noeviction", policy, maxmem)
}

// Close stops the watcher and closes the connections.
func (c *Client) Close() error {
	c.cancel()
	c.wg.Wait()
	return c.rdb.Close()
}

// clientLog passes go-redis's own messages (a failed dial, a Sentinel
// switch) to slog at debug level: Client already logs an outage once at
// ERROR, and go-redis would print one line per failed dial on stderr.
type clientLog struct{ log *slog.Logger }

// Printf implements go-redis's logging interface.
func (l clientLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "redis-client")
}

// RouteClientLogs sends go-redis's messages to log at debug level. The
// go-redis logger is one per process: call this once, from main.
func RouteClientLogs(log *slog.Logger) { redis.SetLogger(clientLog{log}) }
