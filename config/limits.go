package config

import (
	"net"
	"time"
)

// finishOperations defaults and checks the keys of running kanmon: the
// caps, the drain timeout, the log format and the metrics listener.
func (c *Config) finishOperations() error {
	for _, k := range []struct {
		key string
		v   *int
		def int
	}{
		{"max_connections", &c.MaxConnections, DefaultMaxConnections},
		{"max_preauth_per_ip", &c.MaxPreAuthPerIP, DefaultMaxPreAuthPerIP},
		{"max_sessions_per_user_ip", &c.MaxSessionsPerUserIP, DefaultMaxSessionsPerUserIP},
		{"max_preauth_per_prefix", &c.MaxPreAuthPerPrefix, DefaultMaxPreAuthPerPrefix},
		{"preauth_prefix_v4_bits", &c.PreAuthPrefixV4Bits, DefaultPreAuthPrefixV4Bits},
		{"preauth_prefix_v6_bits", &c.PreAuthPrefixV6Bits, DefaultPreAuthPrefixV6Bits},
		{"stress_threshold_percent", &c.StressThresholdPercent, DefaultStressThresholdPercent},
	} {
		switch {
		case *k.v == 0:
			*k.v = k.def
		case *k.v < 0:
			return c.errorf(k.key, "%s must be positive (default %d)", k.key, k.def)
		}
	}
	if err := c.finishSiege(); err != nil {
		return err
	}
	if c.DrainTimeout.Duration == 0 {
		c.DrainTimeout.Duration = DefaultDrainTimeout
	}
	if c.DrainTimeout.Duration < 0 {
		return c.errorf("drain_timeout", "drain_timeout must be positive")
	}
	switch c.LogFormat {
	case "":
		c.LogFormat = LogFormatText
	case LogFormatText, LogFormatJSON:
	default:
		return c.errorf("log_format", "log_format %q: want text or json", c.LogFormat)
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			return c.errorf("metrics_address", "metrics_address %q: want host:port", c.MetricsAddress)
		}
		for _, l := range c.Listeners {
			if l.Address == c.MetricsAddress {
				return c.errorf("metrics_address", "metrics_address %s is also a [[listener]] address", c.MetricsAddress)
			}
		}
	}
	return nil
}

// finishSiege applies the defaults of the keys that keep a pool of
// addresses from filling the proxy, and refuses combinations that make no
// sense: a lifetime shorter than the idle timeout, stress values longer
// than the normal ones, a prefix wider than its address, a reserve as
// large as the cap.
func (c *Config) finishSiege() error {
	for _, d := range []struct {
		key string
		v   *Duration
		def time.Duration
	}{
		{"preauth_lifetime", &c.PreAuthLifetime, DefaultPreAuthLifetime},
		{"stress_preauth_timeout", &c.StressPreAuthTimeout, DefaultStressPreAuthTimeout},
		{"stress_preauth_lifetime", &c.StressPreAuthLifetime, DefaultStressPreAuthLifetime},
	} {
		switch {
		case d.v.Duration == 0:
			d.v.Duration = d.def
		case d.v.Duration < 0:
			return c.errorf(d.key, "%s must be positive", d.key)
		}
	}
	switch {
	case c.PreAuthLifetime.Duration < c.PreAuthTimeout.Duration:
		return c.errorf("preauth_lifetime", "preauth_lifetime %s is shorter than preauth_timeout %s", c.PreAuthLifetime.Duration, c.PreAuthTimeout.Duration)
	case c.StressPreAuthTimeout.Duration > c.PreAuthTimeout.Duration:
		c.StressPreAuthTimeout.Duration = c.PreAuthTimeout.Duration
	}
	if c.StressPreAuthLifetime.Duration > c.PreAuthLifetime.Duration {
		c.StressPreAuthLifetime.Duration = c.PreAuthLifetime.Duration
	}
	if c.StressPreAuthLifetime.Duration < c.StressPreAuthTimeout.Duration {
		return c.errorf("stress_preauth_lifetime", "stress_preauth_lifetime %s is shorter than stress_preauth_timeout %s", c.StressPreAuthLifetime.Duration, c.StressPreAuthTimeout.Duration)
	}
	if c.PreAuthPrefixV4Bits > 32 {
		return c.errorf("preauth_prefix_v4_bits", "preauth_prefix_v4_bits %d: an IPv4 prefix has at most 32 bits", c.PreAuthPrefixV4Bits)
	}
	if c.PreAuthPrefixV6Bits > 128 {
		return c.errorf("preauth_prefix_v6_bits", "preauth_prefix_v6_bits %d: an IPv6 prefix has at most 128 bits", c.PreAuthPrefixV6Bits)
	}
	if c.StressThresholdPercent > 100 {
		return c.errorf("stress_threshold_percent", "stress_threshold_percent %d: want 1 to 100", c.StressThresholdPercent)
	}
	if c.ReservedConnections == nil {
		r := c.MaxConnections * DefaultReservedConnectionsPercent / 100
		c.ReservedConnections = &r
	}
	if r := *c.ReservedConnections; r < 0 || r >= c.MaxConnections {
		return c.errorf("reserved_connections", "reserved_connections %d: want 0 to max_connections - 1 (%d)", r, c.MaxConnections-1)
	}
	return nil
}
