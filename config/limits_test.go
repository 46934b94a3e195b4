package config

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// The operations and siege keys: each one's default in a config without
// it, and the value a config sets.
func TestOperationsKeys(t *testing.T) {
	parse := func(doc string) *Config {
		t.Helper()
		c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(doc+listener1+backendIMAP))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	reserved := func(c *Config) any { return *c.ReservedConnections }
	for _, k := range []struct {
		key, set      string
		get           func(*Config) any
		def, setValue any
	}{
		{"max_connections", "500", func(c *Config) any { return c.MaxConnections }, 10000, 500},
		{"max_preauth_per_ip", "5", func(c *Config) any { return c.MaxPreAuthPerIP }, 20, 5},
		{"max_sessions_per_user_ip", "3", func(c *Config) any { return c.MaxSessionsPerUserIP }, 10, 3},
		{"drain_timeout", `"2s"`, func(c *Config) any { return c.DrainTimeout.Duration }, 10 * time.Second, 2 * time.Second},
		{"log_format", `"json"`, func(c *Config) any { return c.LogFormat }, LogFormatText, LogFormatJSON},
		{"metrics_address", `"127.0.0.1:9154"`, func(c *Config) any { return c.MetricsAddress }, "", "127.0.0.1:9154"},
		{"preauth_lifetime", `"5m"`, func(c *Config) any { return c.PreAuthLifetime.Duration }, 3 * time.Minute, 5 * time.Minute},
		{"max_preauth_per_prefix", "40", func(c *Config) any { return c.MaxPreAuthPerPrefix }, 100, 40},
		{"preauth_prefix_v4_bits", "20", func(c *Config) any { return c.PreAuthPrefixV4Bits }, 24, 20},
		{"preauth_prefix_v6_bits", "56", func(c *Config) any { return c.PreAuthPrefixV6Bits }, 64, 56},
		{"reserved_connections", "0", reserved, 1000, 0},
		{"stress_threshold_percent", "90", func(c *Config) any { return c.StressThresholdPercent }, 75, 90},
		{"stress_preauth_timeout", `"5s"`, func(c *Config) any { return c.StressPreAuthTimeout.Duration }, 10 * time.Second, 5 * time.Second},
		{"stress_preauth_lifetime", `"20s"`, func(c *Config) any { return c.StressPreAuthLifetime.Duration }, 30 * time.Second, 20 * time.Second},
	} {
		eq(t, k.key+" by default", k.get(parse("")), k.def)
		eq(t, k.key, k.get(parse(k.key+" = "+k.set+"\n")), k.setValue)
	}
	// The reserve follows max_connections unless it is set.
	eq(t, "reserved_connections of 500", reserved(parse("max_connections = 500\n")), 50)
	// Stress values longer than the normal ones are cut to them.
	c := parse("preauth_timeout = \"5s\"\nstress_preauth_timeout = \"20s\"\n")
	eq(t, "stress_preauth_timeout over preauth_timeout", c.StressPreAuthTimeout.Duration, 5*time.Second)
}

func TestOperationsErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kanmon.toml")
	cases := []struct{ name, doc, want string }{
		{"negative max_connections", "max_connections = -1 # <-\n", "max_connections must be positive (default 10000)"},
		{"negative max_preauth_per_ip", "max_preauth_per_ip = -5 # <-\n", "max_preauth_per_ip must be positive (default 20)"},
		{"negative max_sessions_per_user_ip", "max_sessions_per_user_ip = -1 # <-\n", "max_sessions_per_user_ip must be positive (default 10)"},
		{"negative drain_timeout", `drain_timeout = "-1s" # <-` + "\n", "drain_timeout must be positive"},
		{"drain_timeout not a string", "drain_timeout = 10 # <-\n", `drain_timeout: want a duration string such as "60s"`},
		{"unknown log_format", `log_format = "logfmt" # <-` + "\n", `log_format "logfmt": want text or json`},
		{"metrics_address without port", `metrics_address = "127.0.0.1" # <-` + "\n", `metrics_address "127.0.0.1": want host:port`},
		{"metrics_address on a listener", `metrics_address = "127.0.0.1:1143" # <-` + "\n", "metrics_address 127.0.0.1:1143 is also a [[listener]] address"},
		{"lifetime under the timeout", `preauth_timeout = "2m"` + "\n" + `preauth_lifetime = "1m" # <-` + "\n", "preauth_lifetime 1m0s is shorter than preauth_timeout 2m0s"},
		{"stress lifetime under the stress timeout", `stress_preauth_lifetime = "5s" # <-` + "\n", "stress_preauth_lifetime 5s is shorter than stress_preauth_timeout 10s"},
		{"prefix wider than IPv4", "preauth_prefix_v4_bits = 33 # <-\n", "preauth_prefix_v4_bits 33: an IPv4 prefix has at most 32 bits"},
		{"stress threshold over 100", "stress_threshold_percent = 150 # <-\n", "stress_threshold_percent 150: want 1 to 100"},
		{"reserve as large as the cap", "max_connections = 10\nreserved_connections = 10 # <-\n", "reserved_connections 10: want 0 to max_connections - 1 (9)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.doc + listener1 + backendIMAP
			c, err := Parse(file, []byte(doc))
			if c != nil {
				t.Error("got a config with the error")
			}
			wantErr(t, err, fmt.Sprintf("%s:%d: ", file, markedLine(t, doc)), tc.want)
		})
	}
}
