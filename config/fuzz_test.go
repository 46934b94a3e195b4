package config

import (
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics and that every error starts with
// the file name, so that `kanmon check` always says where the problem is.
func FuzzParse(f *testing.F) {
	f.Add(designExample)
	f.Add(tlsTable + listener1 + listener2 + backendIMAP)
	f.Add("listener = [{ protocol = \"imap\", address = \":1\", tls = \"none\" }]\nbackend.imap = { address = \":2\", master_user = \"m\", master_password = \"p\" }\n")
	f.Add("idle_timeout = 31\n[[listener]]\n[[listener.x]]\n")
	f.Add("trusted_networks = [[\"10.0.0.0/8\"], {a = 1}]\n")
	for _, tc := range errorCases[:8] {
		f.Add(tc.doc)
	}
	const file = "/nonexistent/kanmon-fuzz/kanmon.toml"
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := Parse(file, []byte(doc))
		if err != nil {
			if c != nil {
				t.Fatal("config and error both returned")
			}
			if !strings.HasPrefix(err.Error(), file+":") {
				t.Fatalf("error does not start with the file name: %q", err)
			}
			return
		}
		if len(c.Listeners) == 0 || c.Require2FAOutside == nil || c.IdleTimeout.Duration < MinIdleTimeout {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
		for _, l := range c.Listeners {
			if c.Backend.For(l.Protocol) == nil {
				t.Fatalf("listener %s without backend", l.Protocol)
			}
		}
	})
}
