package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// Values of [redis] on_failure.
const (
	// RedisOnFailureLocal: while Redis can't be reached, each node
	// enforces the lockout on its own counters, with thresholds divided
	// by the nodes alive at the last heartbeat.
	RedisOnFailureLocal = "local"
	// RedisOnFailureClosed: while Redis can't be reached, logins get the
	// protocol's temporary error.
	RedisOnFailureClosed = "closed"
)

// DefaultRedisKeyPrefix starts every key kanmon writes to Redis.
const DefaultRedisKeyPrefix = "kanmon:"

// Redis is the [redis] section: the Redis (or Redis Sentinel set) that
// several kanmon nodes share their short-lived security state through:
// the lockout counters, locks, stale-secret fingerprints and known-good
// addresses, per-passcode last use, portal sessions, the TOTP replay
// guard and the nodes' heartbeats (docs/cluster.md). Without [redis]
// that state stays in state_dir (bbolt) and memory, for one node. Redis
// holds no secret: user names, keyed fingerprints, addresses and hashes
// of portal session tokens with sealed session records. Changes take effect at the next restart, not
// on reload.
type Redis struct {
	// URL is one Redis server: redis://[user@]host:port/db, or rediss://
	// for TLS. Set URL or Sentinels, not both.
	URL string `toml:"url"`
	// Sentinels are the host:port addresses of Redis Sentinels; kanmon
	// asks them for the current master and follows a failover without a
	// restart. Requires Master.
	Sentinels []string `toml:"sentinels"`
	// Master is the Sentinel master name. Required with Sentinels.
	Master string `toml:"master"`
	// DB is the database number with Sentinels (with URL, put it in the
	// URL's path). Default 0.
	DB int `toml:"db"`
	// Username is the Redis ACL user, if any (with URL it may be in the
	// URL instead).
	Username string `toml:"username"`
	// PasswordFile holds the Redis password (the first line), relative
	// to the config file. A password in the URL is refused: keep secrets
	// out of the config file. With Sentinels it is the masters' and
	// replicas' password; see SentinelPasswordFile.
	PasswordFile string `toml:"password_file"`
	// SentinelPasswordFile holds the Sentinels' own password, if they
	// have one (Sentinel's requirepass).
	SentinelPasswordFile string `toml:"sentinel_password_file"`
	// TLS turns on TLS to the Sentinels and the master (with URL, use
	// rediss:// instead). Default false.
	TLS bool `toml:"tls"`
	// CAFile is a PEM file of CA certificates to verify Redis's
	// certificate with, instead of the system's. Relative to the config
	// file.
	CAFile string `toml:"ca_file"`
	// KeyPrefix starts every key kanmon writes, so that kanmon can share
	// a Redis with other programs. Default kanmon:.
	KeyPrefix string `toml:"key_prefix"`
	// OnFailure is what logins get while Redis can't be reached: local
	// (each node enforces on its own counters, thresholds divided by the
	// nodes alive) or closed (the protocol's temporary error). The portal
	// refuses sign-in either way. Default local.
	OnFailure string `toml:"on_failure"`
	// Node names this node in the heartbeats and `kanmon sessions`.
	// Default: the host name.
	Node string `toml:"node"`

	// Password is PasswordFile's content after Load.
	Password string `toml:"-"`
	// SentinelPassword is SentinelPasswordFile's content after Load.
	SentinelPassword string `toml:"-"`
}

// finishRedis applies [redis]'s defaults and checks it.
func (c *Config) finishRedis() error {
	r := c.Redis
	if r == nil {
		return nil
	}
	rerr := func(key, format string, args ...any) error {
		return c.errorf("redis."+key, "redis: %s", fmt.Sprintf(format, args...))
	}
	switch {
	case r.URL == "" && len(r.Sentinels) == 0:
		return rerr("url", "set url (one Redis) or sentinels (with master)")
	case r.URL != "" && len(r.Sentinels) > 0:
		return rerr("sentinels", "set url or sentinels, not both")
	case r.URL != "":
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return rerr("url", "url: want redis://host:port/db or rediss://host:port/db")
		}
		if _, set := u.User.Password(); set {
			return rerr("url", "url holds a password: put it in password_file instead")
		}
	default:
		if r.Master == "" {
			return rerr("master", "master (the Sentinel master name) is required with sentinels")
		}
		for i, s := range r.Sentinels {
			if _, _, err := net.SplitHostPort(s); err != nil {
				return rerr(fmt.Sprintf("sentinels[%d]", i), "sentinels: %q: want host:port", s)
			}
		}
	}
	if r.DB < 0 {
		return rerr("db", "db must be 0 or more")
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = DefaultRedisKeyPrefix
	}
	if strings.ContainsAny(r.KeyPrefix, "{} \t\r\n") {
		return rerr("key_prefix", "key_prefix %q: no braces (hash tags) or white space", r.KeyPrefix)
	}
	switch r.OnFailure {
	case "":
		r.OnFailure = RedisOnFailureLocal
	case RedisOnFailureLocal, RedisOnFailureClosed:
	default:
		return rerr("on_failure", "on_failure %q: want local or closed", r.OnFailure)
	}
	if r.Node == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "kanmon"
		}
		r.Node = h
	}
	if strings.ContainsAny(r.Node, " \t\r\n") || len(r.Node) > 64 {
		return rerr("node", "node %q: at most 64 characters, no white space", r.Node)
	}
	var err error
	if r.Password, err = c.readSecretFile("redis.password_file", &r.PasswordFile); err != nil {
		return err
	}
	if r.SentinelPassword, err = c.readSecretFile("redis.sentinel_password_file", &r.SentinelPasswordFile); err != nil {
		return err
	}
	r.CAFile = c.resolve(r.CAFile)
	return nil
}

// readSecretFile resolves *path against the config file's directory and
// returns the file's first line; "" when *path is empty.
func (c *Config) readSecretFile(key string, path *string) (string, error) {
	if *path == "" {
		return "", nil
	}
	*path = c.resolve(*path)
	b, err := os.ReadFile(*path)
	if err != nil {
		return "", c.errorf(key, "%s: %v", key, err)
	}
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.TrimRight(s, "\r")
	if s == "" {
		return "", c.errorf(key, "%s: %s is empty", key, *path)
	}
	return s, nil
}
