package config

import (
	"net"
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
	} {
		switch {
		case *k.v == 0:
			*k.v = k.def
		case *k.v < 0:
			return c.errorf(k.key, "%s must be positive (default %d)", k.key, k.def)
		}
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
