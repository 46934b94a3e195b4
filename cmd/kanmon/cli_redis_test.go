//go:build unix

package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/redistest"
)

// kanmon check asks the Redis of [redis]: a warning when Redis may evict
// kanmon's keys, another when it does not answer; neither is an error.
func TestCLICheckRedis(t *testing.T) {
	evicting := redistest.Start(t, redistest.Options{MaxMemoryPolicy: "allkeys-lru"})
	if err := evicting.Client(t).ConfigSet(t.Context(), "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	safe := redistest.Start(t, redistest.Options{})
	gone := redistest.Start(t, redistest.Options{})
	gone.Kill()
	for _, tc := range []struct {
		name, url, want string
	}{
		{"noeviction", safe.URL(), ""},
		{"allkeys-lru with maxmemory", evicting.URL(), "warning: redis: maxmemory-policy is allkeys-lru with maxmemory 67108864: Redis may evict kanmon's lockout keys"},
		{"down", gone.URL(), `warning: [redis] does not answer now: kanmon serve would start with on_failure = "local" in force`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cfg := accountsTestDir(t)
			text := designConfigText(t) + fmt.Sprintf("\n[redis]\nurl = %q\n", tc.url)
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut := cliMust(t, 0, "check", "-config", cfg)
			if !strings.HasPrefix(out, "ok: ") {
				t.Errorf("stdout %q, want ok", out)
			}
			got := ""
			for _, l := range strings.Split(errOut, "\n") {
				if strings.Contains(l, "redis") {
					got = l
				}
			}
			if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
				t.Errorf("stderr:\n%s\nwant a line starting %q", errOut, tc.want)
			}
		})
	}
}
