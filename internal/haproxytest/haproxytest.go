//go:build unix

// Package haproxytest starts a private, real HAProxy for tests.
//
// Start runs "haproxy -db -f CONFIG -f haproxytest.cfg" in the foreground as
// a child process, in a fresh temporary directory, with an environment of
// its own: only PATH, Options.Env, and one free loopback address
// ("127.0.0.1:PORT") for each name in Options.Listen, so that a
// configuration written with "${NAME}" addresses (as
// contrib/haproxy/haproxy.cfg is) runs verbatim. haproxytest.cfg adds a
// private admin socket, through which Stats, WaitStatus and Command ask
// HAProxy for its servers' states. Start waits until that socket answers,
// retries with new ports when one was taken in the meantime, and kills the
// process at t.Cleanup; whenever the test has failed, the cleanup prints
// HAProxy's output. Set HAPROXYTEST_KEEP=1 to keep the instance directory.
//
// ContribOptions runs kanmon's own contrib/haproxy/haproxy.cfg in front of
// test nodes.
//
// When the haproxy binary is missing the test is skipped, except when the
// environment variable CI is "true": then a missing HAProxy fails the test,
// so that CI cannot pass by skipping the real-HAProxy tests.
package haproxytest

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install haproxy"

// minMajor, minMinor: the oldest HAProxy this package runs. The contrib
// configuration needs 2.4 (".if defined(...)").
const minMajor, minMinor = 2, 4

// Options configures one HAProxy.
type Options struct {
	// ConfigFile is the configuration to run, as it is. Required.
	ConfigFile string
	// Env is HAProxy's environment besides PATH, for the "${NAME}" in the
	// configuration. HAProxy runs in Server.Dir, so a relative path in a
	// value (a socket, a file) lands there.
	Env map[string]string
	// Listen names environment variables that Start sets, each to a free
	// loopback address "127.0.0.1:PORT", for the configuration's bind
	// lines; Server.Addr returns them. A name must not be in Env as well.
	Listen []string
}

// Server is a running private HAProxy.
type Server struct {
	// Dir is the instance directory: haproxytest.cfg, the output
	// (haproxy.log) and the admin socket. HAProxy runs in it.
	Dir string

	bin     string
	cfg     string
	env     map[string]string
	addrs   map[string]string
	logs    testenv.Logs // haproxy.log, the latest run's output
	runner  testenv.Runner
	failLog testenv.FailureLog
}

// haproxy is the binary Start runs: an HAProxy 2.4 or later.
var haproxy = &testenv.Binary{
	Name:        "haproxy",
	Dirs:        []string{"/usr/sbin", "/usr/local/sbin"},
	Package:     "haproxytest",
	Skipping:    "real-HAProxy",
	InstallHint: InstallHint,
	VersionArgs: []string{"-v"},
	Version: func(out string) (string, error) {
		m := versionRE.FindStringSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("no version in %q", strings.TrimSpace(out))
		}
		return m[1], nil
	},
	Supported: func(v string) error {
		if !atLeast(v, minMajor, minMinor) {
			return fmt.Errorf("found HAProxy %s, but the configurations need %d.%d or later", v, minMajor, minMinor)
		}
		return nil
	},
}

// Available reports the path of the haproxy binary and whether it exists.
// It looks in PATH and then in /usr/sbin and /usr/local/sbin, which are often
// missing from an ordinary user's PATH (Debian installs /usr/sbin/haproxy).
func Available() (path string, ok bool) {
	return haproxy.Find()
}

// binary returns the haproxy to run, or skips (fails under CI) the test when
// there is none or it is older than 2.4.
func binary(t testing.TB) (string, bool) {
	t.Helper()
	return haproxy.Require(t)
}

// versionRE finds the version in the first line of "haproxy -v":
// "HAProxy version 2.6.12-1+deb12u4 2023/...".
var versionRE = regexp.MustCompile(`(?i)HA-?Proxy version (\d+\.\d+(?:\.\d+)?)`)

// Version returns the version of the haproxy binary bin, e.g. "2.6.12",
// asking it once per binary.
var Version = func(bin string) (string, error) {
	return haproxy.VersionOf(bin)
}

// atLeast reports whether version v ("2.6.12") is major.minor or later.
func atLeast(v string, major, minor int) bool {
	f := strings.SplitN(v, ".", 3)
	if len(f) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(f[0])
	mi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// Start starts a private HAProxy on opts.ConfigFile and kills it when the
// test ends. It fails the test when the configuration is refused or
// HAProxy does not come up within 10 seconds, with HAProxy's output.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, ok := binary(t)
	if !ok {
		return nil
	}
	cfg, err := filepath.Abs(opts.ConfigFile)
	if err == nil {
		_, err = os.Stat(cfg)
	}
	if opts.ConfigFile == "" {
		err = errors.New("Options.ConfigFile is required")
	}
	if err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	env := map[string]string{}
	for k, v := range opts.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			t.Fatalf("haproxytest: environment variable %q=%q cannot be passed", k, v)
		}
		env[k] = v
	}
	for _, name := range opts.Listen {
		if _, dup := env[name]; dup {
			t.Fatalf("haproxytest: %s is in both Options.Env and Options.Listen", name)
		}
		if name == "" || strings.ContainsAny(name, "=\x00") {
			t.Fatalf("haproxytest: Options.Listen name %q", name)
		}
	}
	// The admin socket's path must fit in a sockaddr_un (108 bytes), which
	// t.TempDir, named after the test, need not: the directory is short.
	dir, err := testenv.MakeDir(t, "haproxytest", false)
	if err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	s := &Server{Dir: dir, bin: bin, cfg: cfg, env: env, addrs: map[string]string{},
		logs: testenv.Logs{Dir: dir, Output: logName, Perm: 0o600}}
	// Registered after the directory's removal, so it runs before it.
	t.Cleanup(func() {
		s.Kill()
		s.failLog.Cleanup(t, "haproxytest: output of haproxy -f "+s.cfg, s.Log)
	})
	if err := os.WriteFile(s.extraPath(), []byte(s.extraConfig()), 0o600); err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	err = testenv.RetryPorts(len(opts.Listen), func(ports []int) error {
		for i, name := range opts.Listen {
			s.addrs[name] = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i]))
		}
		return s.launch()
	})
	if err != nil {
		t.Fatalf("haproxytest: starting %s -db -f %s: %v\noutput:\n%s", s.bin, s.cfg, err, s.failLog.Shown(s.Log()))
	}
	return s
}

// Addr returns the "127.0.0.1:PORT" that Start gave the environment
// variable name of Options.Listen, or "" for another name.
func (s *Server) Addr(name string) string {
	return s.addrs[name]
}

// Env returns HAProxy's environment, Options.Env and Options.Listen's
// addresses together.
func (s *Server) Env() map[string]string {
	m := make(map[string]string, len(s.env)+len(s.addrs))
	for k, v := range s.env {
		m[k] = v
	}
	for k, v := range s.addrs {
		m[k] = v
	}
	return m
}

const (
	extraName  = "haproxytest.cfg"
	socketName = "haproxytest.sock"
	logName    = "haproxy.log"
)

func (s *Server) extraPath() string  { return filepath.Join(s.Dir, extraName) }
func (s *Server) socketPath() string { return filepath.Join(s.Dir, socketName) }

// extraConfig is the configuration file loaded after Options.ConfigFile: a
// second global section, which HAProxy adds to the first, with the admin
// socket of Stats and Command. The path is relative to Dir, where HAProxy
// runs, and single-quoted: nothing in it is expanded.
func (s *Server) extraConfig() string {
	return "# Written by kanmon's internal/haproxytest: the admin socket it asks.\n" +
		"global\n" +
		"    stats socket 'unix@" + socketName + "' mode 600 level admin\n"
}

// launch runs haproxy in Dir and waits until the admin socket answers. On
// failure the process is gone, and the error is marked testenv.ErrAddrInUse
// when a port was taken. Each run starts with an empty log, so the log
// shown is this run's.
func (s *Server) launch() error {
	os.Remove(s.socketPath())
	// -db: stay in the foreground, one process, whatever the file says.
	cmd := exec.Command(s.bin, "-db", "-f", s.cfg, "-f", extraName)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range s.Env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	slices.Sort(cmd.Env)
	// The kernel kills haproxy if the test binary dies without cleaning
	// up. (The tests run it without "user haproxy", which would drop the
	// parent-death signal.)
	return s.runner.Start(testenv.Launch{Cmd: cmd, Logs: s.logs, DeathSig: syscall.SIGKILL, Ready: s.ready})
}

// ready reports whether the admin socket answers "show info". HAProxy binds
// every listener before it serves any, so then all are bound.
func (s *Server) ready() error {
	out, err := s.Command("show info")
	if err != nil {
		return fmt.Errorf("the admin socket: %w", err)
	}
	if !strings.Contains(out, "Name: HAProxy") {
		return fmt.Errorf("show info answered %q", out)
	}
	return nil
}

// Command sends one command of HAProxy's runtime API (its management
// guide, "show stat", "disable server BACKEND/SERVER", "set server
// BACKEND/SERVER state drain") to the private admin socket and returns the
// answer.
func (s *Server) Command(cmd string) (string, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return "", errors.New("haproxytest: a command is one line")
	}
	c, err := net.DialTimeout("unix", s.socketPath(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	// Without "prompt", HAProxy answers one command and closes.
	b, err := io.ReadAll(c)
	return string(b), err
}

// Stat is one server of HAProxy's "show stat".
type Stat struct {
	// Backend and Server name it, e.g. "bk_imap" and "node1".
	Backend, Server string
	// Status is the server's state: "UP", "DOWN", "MAINT", "DRAIN",
	// "no check", or a transition such as "UP 1/3" (up, one check
	// failed of the three that take it down) or "DOWN 1/2".
	Status string
	// CheckStatus is the result of the latest health check, e.g. "L7OK"
	// (passed), "L4CON" (connection refused), "L7RSP" (a wrong answer);
	// "INI" before the first and "" without checks. LastCheck is its
	// detail, e.g. "Connection refused".
	CheckStatus, LastCheck string
	// Sessions is how many sessions the server has now (scur), and Total
	// how many it has had (stot).
	Sessions, Total int
}

// checked reports whether the latest health check passed, or the server
// has none.
func (st Stat) checked() bool {
	return st.CheckStatus == "" || strings.HasSuffix(st.CheckStatus, "OK")
}

// Stats returns the state of every server of every backend.
func (s *Server) Stats() ([]Stat, error) {
	out, err := s.Command("show stat")
	if err != nil {
		return nil, err
	}
	return parseStats(out)
}

// parseStats reads "show stat"'s CSV, whose first line names the fields
// ("# pxname,svname,qcur,...").
func parseStats(out string) ([]Stat, error) {
	head, body, ok := strings.Cut(out, "\n")
	if !ok || !strings.HasPrefix(head, "# ") {
		return nil, fmt.Errorf("show stat answered %q", out)
	}
	fields := strings.Split(strings.TrimSuffix(strings.TrimPrefix(head, "# "), ","), ",")
	col := map[string]int{}
	for i, f := range fields {
		col[f] = i
	}
	for _, f := range []string{"pxname", "svname", "status", "scur", "stot", "check_status", "last_chk"} {
		if _, ok := col[f]; !ok {
			return nil, fmt.Errorf("show stat has no field %s: %q", f, head)
		}
	}
	r := csv.NewReader(strings.NewReader(body))
	r.FieldsPerRecord = -1
	var stats []Stat
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("show stat: %v", err)
		}
		if len(rec) < len(fields) {
			continue
		}
		sv := rec[col["svname"]]
		if sv == "FRONTEND" || sv == "BACKEND" {
			continue
		}
		st := Stat{Backend: rec[col["pxname"]], Server: sv, Status: rec[col["status"]],
			// "* L7OK": a check is under way, the latest one passed.
			CheckStatus: strings.TrimPrefix(rec[col["check_status"]], "* "), LastCheck: rec[col["last_chk"]]}
		st.Sessions, _ = strconv.Atoi(rec[col["scur"]])
		st.Total, _ = strconv.Atoi(rec[col["stot"]])
		stats = append(stats, st)
	}
	return stats, nil
}

// Stat returns the state of one server, named "BACKEND/SERVER".
func (s *Server) Stat(name string) (Stat, error) {
	stats, err := s.Stats()
	if err != nil {
		return Stat{}, err
	}
	for _, st := range stats {
		if st.Backend+"/"+st.Server == name {
			return st, nil
		}
	}
	return Stat{}, fmt.Errorf("haproxytest: no server %s", name)
}

// WaitStatus waits until every server named in want ("BACKEND/SERVER")
// has the status given there, e.g. {"bk_imap/node2": "DOWN"}, and returns
// how long that took. "UP" also waits for the server's latest health check
// to have passed: HAProxy counts a server UP before its first check. It
// fails the test, with every server's state, when that has not happened
// within timeout.
func (s *Server) WaitStatus(t testing.TB, timeout time.Duration, want map[string]string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		stats, err := s.Stats()
		var wrong []string
		if err == nil {
			have := map[string]Stat{}
			for _, st := range stats {
				have[st.Backend+"/"+st.Server] = st
			}
			for name, w := range want {
				h, ok := have[name]
				switch {
				case !ok:
					wrong = append(wrong, name+" missing")
				case h.Status != w:
					wrong = append(wrong, fmt.Sprintf("%s %s, want %s", name, h.Status, w))
				case w == "UP" && !h.checked():
					wrong = append(wrong, fmt.Sprintf("%s UP, but its check: %s %s", name, h.CheckStatus, h.LastCheck))
				}
			}
		}
		if err == nil && len(wrong) == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			slices.Sort(wrong)
			var all strings.Builder
			for _, st := range stats {
				fmt.Fprintf(&all, "  %s/%s %s, check %s %q, %d sessions\n", st.Backend, st.Server, st.Status, st.CheckStatus, st.LastCheck, st.Sessions)
			}
			t.Fatalf("haproxytest: after %v: %v %s\nall servers:\n%s", timeout, err, strings.Join(wrong, "; "), all.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill kills HAProxy with SIGKILL (its process group) and waits until it has
// exited: open connections through it break. It does nothing when HAProxy is
// not running.
func (s *Server) Kill() {
	if p := s.runner.Process(); p != nil {
		p.Kill()
	}
}

// Log returns what HAProxy wrote to stdout and stderr in its latest run:
// its warnings and alerts, and its log when the configuration sends it to
// stderr (ContribOptions does). The cleanup prints it by itself when the
// test has failed.
func (s *Server) Log() string {
	return s.logs.String()
}

// FreePort returns a TCP port that was free a moment ago on every one of
// hosts (IP addresses, e.g. "127.0.0.11" and "127.0.0.12"), so that several
// test nodes on their own loopback addresses can listen on one port, as
// the nodes behind contrib/haproxy/haproxy.cfg do.
func FreePort(hosts ...string) (int, error) {
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	var last error
	for attempt := 0; attempt < 20; attempt++ {
		l, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{l}
		ok := true
		for _, h := range hosts[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				last = err
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("haproxytest: no port free on all of %v: %v", hosts, last)
}
