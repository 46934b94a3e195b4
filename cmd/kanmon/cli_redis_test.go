//go:build unix

package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/redisstate"
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

// With [redis] and no server running here, passcode list reads last use
// from Redis, where the nodes keep it.
func TestCLIPasscodeListLastUseFromRedis(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	_, cfg := accountsTestDir(t)
	text := designConfigText(t) + fmt.Sprintf("\n[redis]\nurl = %q\nnode = \"cli\"\n", r.URL())
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "Thunderbird")
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	accts, err := accountsStore(c).Read()
	if err != nil {
		t.Fatal(err)
	}
	id := accts.Lookup("alice").Passcodes[0].ID()
	quiet := slog.New(slog.DiscardHandler)
	rc, err := redisstate.Open(c.Redis, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	lu := redisstate.NewLastUse(rc, quiet)
	lu.Record(id, auth.LastUse{User: "alice", App: "Thunderbird", Time: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), ClientIP: "192.0.2.9", Protocol: "imap"})
	if err := lu.Flush(); err != nil {
		t.Fatal(err)
	}
	lu.Close()
	out, _ := cliMust(t, 0, "passcode", "list", "-config", cfg)
	if !strings.Contains(out, "2026-12-01T08:00:00Z") || !strings.Contains(out, "192.0.2.9") || !strings.Contains(out, "read from Redis") {
		t.Fatalf("passcode list:\n%s", out)
	}
}
