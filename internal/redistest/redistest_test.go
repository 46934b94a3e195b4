//go:build unix

package redistest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// TestMain fails the package when a goroutine (a go-redis client's, or a
// process waiter) outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServerSetGetKillRestart(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Password: `pw "with" \ spaces`, MaxMemoryPolicy: "allkeys-lru"})
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	ctx := context.Background()
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	if got, err := c.ConfigGet(ctx, "maxmemory-policy").Result(); err != nil || got["maxmemory-policy"] != "allkeys-lru" {
		t.Errorf("CONFIG GET maxmemory-policy = %v, %v", got, err)
	}
	// The password is required.
	anon := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("PING without the password: %v, want NOAUTH", err)
	}

	s.Kill()
	s.Kill() // a no-op
	if _, err := s.do("PING"); err == nil {
		t.Fatal("PING answered after Kill")
	}
	s.Start(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
	// Nothing was saved.
	if err := c.Get(ctx, "k").Err(); err != redis.Nil {
		t.Errorf("GET after restart: %v, want redis.Nil", err)
	}
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	const pw = "sentinel-test-pw"
	begin := time.Now()
	set := StartSentinel(t, SentinelOptions{Password: pw})
	t.Logf("sentinel set ready in %v", time.Since(begin).Round(time.Millisecond))
	if set.MasterName() != DefaultMasterName || len(set.SentinelAddrs()) != 3 {
		t.Fatalf("MasterName %q, SentinelAddrs %q", set.MasterName(), set.SentinelAddrs())
	}
	ctx := context.Background()
	fc := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    set.MasterName(),
		SentinelAddrs: set.SentinelAddrs(),
		Password:      pw,
		DialTimeout:   time.Second,
		ReadTimeout:   time.Second,
		WriteTimeout:  time.Second,
	})
	t.Cleanup(func() { fc.Close() })
	if err := fc.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatalf("SET before the failover: %v", err)
	}
	old := set.MasterAddr(t)

	begin = time.Now()
	newMaster := set.KillMaster(t)
	t.Logf("failover from %s to %s in %v", old, newMaster, time.Since(begin).Round(time.Millisecond))
	if newMaster == old {
		t.Fatalf("KillMaster returned the old master %s", old)
	}
	if got := set.MasterAddr(t); got != newMaster {
		t.Errorf("MasterAddr() = %s after KillMaster returned %s", got, newMaster)
	}

	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err = fc.Set(ctx, "after", "2", 0).Err(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("SET through the failover client after the failover: %v", err)
	}
	direct := redis.NewClient(&redis.Options{Addr: newMaster, Password: pw})
	defer direct.Close()
	for key, want := range map[string]string{"after": "2", "before": "1"} {
		if got, err := direct.Get(ctx, key).Result(); err != nil || got != want {
			t.Errorf("GET %s on the new master %s = %q, %v; want %q", key, newMaster, got, err, want)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":       `"plain"`,
		`a"b\c`:       `"a\"b\\c"`,
		"tab\there":   `"tab\x09here"`,
		"caf\xc3\xa9": `"caf\xc3\xa9"`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{{Password: "a\nb"}, {MaxMemoryPolicy: "lru"}} {
		if err := validate(o); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", o)
		}
	}
	if err := validate(Options{Password: "p w", MaxMemoryPolicy: "volatile-ttl"}); err != nil {
		t.Error(err)
	}
}

func TestMissingRedisSkipsUnlessCI(t *testing.T) {
	testenv.CheckUnavailable(t, redisServer)
}
