package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/pgtest"
	"github.com/kanmon-mail/kanmon/internal/redistest"
)

// The cluster variants of BenchmarkLoginPath/serve: the same config and
// users, with [redis] (the shared lockout, issue 12) or with the accounts
// in PostgreSQL (issue 13).

// serveBinary is KANMON_LOGIN_BIN, else a fresh build.
func serveBinary(t testing.TB) string {
	if bin := os.Getenv("KANMON_LOGIN_BIN"); bin != "" {
		return bin
	}
	return buildKanmon(t)
}

// startRedisServe starts `kanmon serve` on opts with [redis] on a private
// redis-server.
func startRedisServe(t testing.TB, opts kanmontest.Options) (*kanmontest.Files, *serveProcess, *redistest.Server) {
	r := redistest.Start(t, redistest.Options{})
	files := kanmontest.WriteFiles(t, opts)
	f, err := os.OpenFile(files.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = fmt.Fprintf(f, "\n[redis]\nurl = %q\n", r.URL())
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return files, startServe(t, serveBinary(t), files.ConfigPath, files.IMAPPlain), r
}

// startPGServe starts `kanmon serve` on opts with the accounts file
// imported into a private PostgreSQL and the config pointing there.
func startPGServe(t testing.TB, opts kanmontest.Options) (*kanmontest.Files, *serveProcess) {
	pg := pgtest.Start(t, pgtest.Options{})
	files := kanmontest.WriteFiles(t, opts)
	bin := serveBinary(t)
	moveAccountsToPG(t, bin, files, pg)
	return files, startServe(t, bin, files.ConfigPath, files.IMAPPlain)
}

// moveAccountsToPG points files' config at pg for its accounts, and
// imports the accounts file there with `kanmon accounts import`.
func moveAccountsToPG(t testing.TB, bin string, files *kanmontest.Files, pg *pgtest.Server) {
	t.Helper()
	text, err := os.ReadFile(files.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	dbURL := pg.URL() + "&passfile=" + url.QueryEscape(pg.PassFile(t))
	text = regexp.MustCompile(`(?m)^accounts\s*=.*$`).ReplaceAll(text, []byte(fmt.Sprintf("accounts = %q", dbURL)))
	if err := os.WriteFile(files.ConfigPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, bin, "accounts", "import", "-config", files.ConfigPath, filepath.Join(files.Dir, "accounts.toml"))
}

// reportRedisCommands reports Redis's commands per login (the
// heartbeat's and the last-use flushes' included), from INFO
// commandstats, and logs them by name.
func reportRedisCommands(b *testing.B, rc *redis.Client) {
	stats, err := rc.Info(b.Context(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	calls, byName := 0, []string{}
	for _, line := range strings.Split(stats, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
		calls += n
		byName = append(byName, fmt.Sprintf("%s=%.3f", strings.TrimPrefix(name, "cmdstat_"), float64(n)/float64(b.N)))
	}
	b.ReportMetric(float64(calls)/float64(b.N), "redis-calls/op")
	b.Logf("Redis commands per login: %s", strings.Join(byName, " "))
}
