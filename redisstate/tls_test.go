//go:build unix

package redisstate_test

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/internal/testenv"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/redisstate"
)

// [redis] over TLS: a rediss:// URL with ca_file reaches a redis-server
// that speaks only TLS (port 0, tls-port), and the shared lockout works
// through it; without the CA, the client refuses the certificate.
func TestRedisTLS(t *testing.T) {
	bin, ok := redistest.Available()
	if !ok {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not installed (CI=true: a failure, not a skip)")
		}
		t.Skip("redis-server not installed")
	}
	dir := t.TempDir()
	cert, err := selfsigned.New("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := cert.WriteFiles(dir, "redis.crt", "redis.key")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ports[0])
	cmd := exec.Command(bin, "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
		"--tls-cert-file", certPath, "--tls-key-file", keyPath, "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server with TLS did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	url := fmt.Sprintf("rediss://127.0.0.1:%s/0", port)

	c, err := redisstate.Open(&config.Redis{URL: url, CAFile: certPath, KeyPrefix: "kanmon:", Node: "tls", OnFailure: config.RedisOnFailureClosed}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Up() {
		t.Fatal("the TLS client is not up")
	}
	g, err := lockout.Open(dir+"/kanmon.db", testKey, lockout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	l := redisstate.NewLockout(c, g, config.RedisOnFailureClosed, func() int { return 1 }, slog.New(slog.DiscardHandler))
	defer l.Close()
	from := ip("192.0.2.77")
	for i := range 10 {
		l.Failure("tina", from, fmt.Sprint("g", i))
	}
	wantVerdict(t, "over TLS", l.Check("tina", from, "x"), lockout.Locked, lockout.ScopeAccountIP)

	// The system roots do not know the certificate: refused, so the
	// client is down and closed mode refuses logins.
	bad, err := redisstate.Open(&config.Redis{URL: url, KeyPrefix: "kanmon:", Node: "tls", OnFailure: config.RedisOnFailureClosed}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if bad.Up() {
		t.Fatal("a client without the CA trusted the self-signed certificate")
	}
}
