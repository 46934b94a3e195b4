package config

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestOperationsDefaults(t *testing.T) {
	c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(listener1+backendIMAP))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "max_connections", c.MaxConnections, 10000)
	eq(t, "max_preauth_per_ip", c.MaxPreAuthPerIP, 20)
	eq(t, "max_sessions_per_user_ip", c.MaxSessionsPerUserIP, 10)
	eq(t, "drain_timeout", c.DrainTimeout.Duration, 10*time.Second)
	eq(t, "log_format", c.LogFormat, LogFormatText)
	eq(t, "metrics_address", c.MetricsAddress, "")
}

func TestOperationsKeys(t *testing.T) {
	doc := `
max_connections = 500
max_preauth_per_ip = 5
max_sessions_per_user_ip = 3
drain_timeout = "2s"
log_format = "json"
metrics_address = "127.0.0.1:9154"
` + listener1 + backendIMAP
	c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "max_connections", c.MaxConnections, 500)
	eq(t, "max_preauth_per_ip", c.MaxPreAuthPerIP, 5)
	eq(t, "max_sessions_per_user_ip", c.MaxSessionsPerUserIP, 3)
	eq(t, "drain_timeout", c.DrainTimeout.Duration, 2*time.Second)
	eq(t, "log_format", c.LogFormat, LogFormatJSON)
	eq(t, "metrics_address", c.MetricsAddress, "127.0.0.1:9154")
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
