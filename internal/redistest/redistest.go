//go:build unix

// Package redistest starts private, real Redis servers for tests: a single
// redis-server (Start), or a Sentinel set of one master, one replica and three
// sentinels that can fail over for real (StartSentinel).
//
// Every instance gets its own configuration file in a t.TempDir, listens on a
// free loopback port, keeps nothing on disk (save "", appendonly no) and is
// killed at t.Cleanup; nothing from /etc/redis is read and no system Redis
// service is used. Whenever the test has failed, the cleanup prints the
// instances' logs.
//
// When the redis-server binary is missing the test is skipped, except when
// the environment variable CI is "true": then a missing Redis fails the test,
// so that CI cannot pass by skipping the real-Redis tests.
package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// InstallHint is the command that installs what this package needs. The
// package's redis-server also runs the sentinels (redis-server --sentinel).
const InstallHint = "apt-get install redis-server"

// Options configures one Redis server. The zero value is a server without a
// password and with Redis's default eviction policy.
type Options struct {
	// Password becomes requirepass (the default user's password). Empty:
	// no password.
	Password string
	// MaxMemoryPolicy becomes maxmemory-policy, e.g. "allkeys-lru" or
	// "volatile-ttl". Empty leaves Redis's default, noeviction. No
	// maxmemory is set, so the policy is only what CONFIG GET reports
	// unless the test sets maxmemory itself (CONFIG SET).
	MaxMemoryPolicy string
}

// maxMemoryPolicies are the values Redis 7 accepts for maxmemory-policy.
var maxMemoryPolicies = map[string]bool{
	"volatile-lru": true, "allkeys-lru": true, "volatile-lfu": true, "allkeys-lfu": true,
	"volatile-random": true, "allkeys-random": true, "volatile-ttl": true, "noeviction": true,
}

// Server is one private redis-server (or, inside a SentinelSet, a sentinel).
type Server struct {
	name     string // file names in dir: NAME.conf, NAME.log, NAME.stderr
	dir      string
	bin      string
	password string   // for PING (and ROLE, INFO) of a data node
	sentinel bool     // run with --sentinel
	config   []string // the configuration lines after the common ones
	port     int
	logs     testenv.Logs
	runner   testenv.Runner

	mu     sync.Mutex
	logged bool // a failure message has shown the log already
}

// redisServer is the binary Start and StartSentinel run: a Redis 7 or
// later.
var redisServer = &testenv.Binary{
	Name:        "redis-server",
	Dirs:        []string{"/usr/bin", "/usr/local/bin"},
	Package:     "redistest",
	Skipping:    "real-Redis",
	InstallHint: InstallHint,
	// "Redis server v=7.0.15 sha=..."
	Version: func(out string) (string, error) {
		for _, f := range strings.Fields(out) {
			if v, ok := strings.CutPrefix(f, "v="); ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("no version in %q", strings.TrimSpace(out))
	},
	Supported: func(v string) error {
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err != nil || n < 7 {
			return fmt.Errorf("found Redis %s, but this package writes a Redis 7 configuration", v)
		}
		return nil
	},
}

// Available reports the path of the redis-server binary and whether it
// exists. It looks in PATH and then in /usr/bin and /usr/local/bin.
func Available() (path string, ok bool) {
	return redisServer.Find()
}

// validate checks opts for what the configuration file cannot express.
func validate(opts Options) error {
	if strings.ContainsAny(opts.Password, "\x00\r\n") {
		return errors.New("Password must not contain NUL or line breaks")
	}
	if opts.MaxMemoryPolicy != "" && !maxMemoryPolicies[opts.MaxMemoryPolicy] {
		return fmt.Errorf("MaxMemoryPolicy %q is not one of Redis's policies", opts.MaxMemoryPolicy)
	}
	return nil
}

// Start starts a private redis-server configured by opts and kills it when
// the test ends. It fails the test when PING does not answer within 10
// seconds, with the server's log.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, ok := redisServer.Require(t)
	if !ok {
		return nil
	}
	if err := validate(opts); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s := newServer(t, bin, t.TempDir(), "redis", opts.Password, dataConfig(opts))
	s.firstStart(t)
	return s
}

// newServer makes a Server in dir, not yet started, and registers its
// cleanup: kill it, and print its log when the test has failed. Since dir
// comes from t.TempDir, called earlier, the cleanup runs before dir is
// removed.
func newServer(t testing.TB, bin, dir, name, password string, config []string) *Server {
	s := &Server{name: name, dir: dir, bin: bin, password: password, config: config,
		logs: testenv.Logs{Dir: dir, Output: name + ".stderr", File: name + ".log", Perm: 0o600}}
	t.Cleanup(func() {
		s.Kill()
		s.mu.Lock()
		logged := s.logged
		s.mu.Unlock()
		if t.Failed() && !logged {
			t.Logf("redistest: log of %s:\n%s", s.describe(), s.Log())
		}
	})
	return s
}

// dataConfig returns the configuration lines of a master or replica for opts.
func dataConfig(opts Options) []string {
	var c []string
	if opts.Password != "" {
		c = append(c, "requirepass "+quote(opts.Password))
	}
	if opts.MaxMemoryPolicy != "" {
		c = append(c, "maxmemory-policy "+opts.MaxMemoryPolicy)
	}
	return c
}

// describe names the server in messages: "redis 127.0.0.1:PORT".
func (s *Server) describe() string {
	return s.name + " " + s.Addr()
}

// Addr returns the server's "127.0.0.1:port".
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns "redis://127.0.0.1:PORT/0". It carries no password: give
// Options.Password to the client separately.
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// Client returns a go-redis client of database 0 of the server, with the
// password, and closes it when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.password})
	t.Cleanup(func() { c.Close() })
	return c
}

// Kill kills the server with SIGKILL (its whole process group, so a forked
// child saving or replicating goes too) and waits until it has exited. Its
// data is gone: nothing is saved. It does nothing when the server is not
// running. Start starts it again.
func (s *Server) Kill() {
	if p := s.runner.Process(); p != nil {
		p.Kill()
	}
}

// Start starts the server again after Kill, on the same port and with the
// same configuration file (which Redis may have rewritten, for instance when
// a sentinel reconfigured it), and waits until PING answers. It fails the test
// when the server is running already or does not come up within 10 seconds.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if p := s.runner.Process(); p != nil {
		select {
		case <-p.Exited():
		default:
			t.Fatalf("redistest: Start: %s is running", s.describe())
		}
	}
	if err := s.launch(); err != nil {
		t.Fatalf("redistest: restarting %s: %v\n%s", s.describe(), err, s.logOnce())
	}
}

// firstStart picks a free port, writes the configuration and starts the
// server, trying new ports when the chosen one was taken in the meantime.
func (s *Server) firstStart(t testing.TB) {
	t.Helper()
	err := testenv.RetryBind(func() error {
		ports, err := testenv.FreePorts(1)
		if err != nil {
			return err
		}
		s.port = ports[0]
		if err := s.writeConfig(); err != nil {
			return err
		}
		return s.launch()
	})
	if err != nil {
		t.Fatalf("redistest: starting %s %s: %v\nlog of %s:\n%s", s.bin, s.confPath(), err, s.describe(), s.logOnce())
	}
}

func (s *Server) confPath() string { return filepath.Join(s.dir, s.name+".conf") }

// writeConfig writes the server's configuration file. Redis rewrites it
// (a sentinel always, a server on CONFIG REWRITE, which a sentinel sends
// after a failover), so it is writable and private to this server.
func (s *Server) writeConfig() error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Private test instance written by kanmon's internal/redistest.\n")
	for _, l := range []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(s.port),
		"daemonize no",
		`pidfile ""`,
		"dir " + quote(s.dir),
		"logfile " + quote(filepath.Join(s.dir, s.name+".log")),
		"loglevel notice",
		`save ""`,
		"appendonly no",
	} {
		fmt.Fprintln(&b, l)
	}
	for _, l := range s.config {
		fmt.Fprintln(&b, l)
	}
	return os.WriteFile(s.confPath(), []byte(b.String()), 0o600)
}

// launch runs redis-server on the configuration file and waits until PING
// answers. On failure the process is gone.
func (s *Server) launch() error {
	argv := []string{s.bin, s.confPath()}
	if s.sentinel {
		argv = append(argv, "--sentinel")
	}
	// Each run starts with empty logs, so the log shown is this run's. The
	// kernel kills redis-server if the test binary dies without cleaning
	// up; Kill reaches a child it forked (to stream a snapshot to a
	// replica) too. The goroutine waiting for it runs launch.func1, a name
	// that goleak filters in other packages' tests ignore.
	return s.runner.Launch(argv, s.logs, syscall.SIGKILL, s.pong, func(wait func()) { wait() })
}

// pong reports whether PING answers PONG.
func (s *Server) pong() error {
	r, err := s.do("PING")
	if err != nil {
		return fmt.Errorf("PING at %s: %w", s.Addr(), err)
	}
	if r != "PONG" {
		return fmt.Errorf("PING at %s answered %v", s.Addr(), r)
	}
	return nil
}

// do runs one command on the server, authenticated with its password.
func (s *Server) do(args ...string) (any, error) {
	return command(s.Addr(), s.password, args...)
}

// Log returns the server's log file and anything it wrote to stdout or
// stderr in its latest run. The cleanup prints it by itself when the test
// has failed.
func (s *Server) Log() string {
	return s.logs.String()
}

// logOnce returns the log for a failure message and spares the cleanup
// from printing it again.
func (s *Server) logOnce() string {
	s.mu.Lock()
	s.logged = true
	s.mu.Unlock()
	return s.Log()
}

// quote returns s as a double-quoted string of the Redis configuration file,
// whose parser understands \\, \" and \xHH in it.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
