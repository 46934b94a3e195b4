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
	"sync"
	"syscall"
	"testing"
	"time"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install haproxy"

const (
	// startTimeout bounds how long a start waits for the admin socket.
	startTimeout = 10 * time.Second
	// bindAttempts is how often Start retries with new ports when one was
	// taken between choosing it and HAProxy binding it.
	bindAttempts = 5
	// minMajor, minMinor: the oldest HAProxy this package runs. The
	// contrib configuration needs 2.4 (".if defined(...)").
	minMajor, minMinor = 2, 4
)

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

	bin   string
	cfg   string
	env   map[string]string
	addrs map[string]string

	mu     sync.Mutex
	proc   *process // nil before the first start
	logged bool     // a failure message has shown the log already
}

// process is one run of haproxy.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returned
	err    error         // cmd.Wait's result, valid after exited
}

// Available reports the path of the haproxy binary and whether it exists.
// It looks in PATH and then in /usr/sbin and /usr/local/sbin, which are often
// missing from an ordinary user's PATH (Debian installs /usr/sbin/haproxy).
func Available() (path string, ok bool) {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p, true
	}
	for _, p := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// inCI reports whether the environment says this is a CI run.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// unavailable skips the test, or fails it under CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("haproxytest: %s (CI=true, so this is a failure, not a skip)", msg)
		return
	}
	t.Skipf("haproxytest: %s; skipping real-HAProxy test", msg)
}

// binary returns the haproxy to run, or skips (fails under CI) the test when
// there is none or it is older than 2.4.
func binary(t testing.TB) (string, bool) {
	t.Helper()
	bin, ok := Available()
	if !ok {
		unavailable(t, "haproxy not found in PATH, /usr/sbin or /usr/local/sbin; install it with: %s", InstallHint)
		return "", false
	}
	v, err := Version(bin)
	if err != nil {
		unavailable(t, "%s -v: %v", bin, err)
		return "", false
	}
	if !atLeast(v, minMajor, minMinor) {
		unavailable(t, "found HAProxy %s, but the configurations need %d.%d or later", v, minMajor, minMinor)
		return "", false
	}
	return bin, true
}

// versionRE finds the version in the first line of "haproxy -v":
// "HAProxy version 2.6.12-1+deb12u4 2023/...".
var versionRE = regexp.MustCompile(`(?i)HA-?Proxy version (\d+\.\d+(?:\.\d+)?)`)

// Version returns the version of the haproxy binary bin, e.g. "2.6.12",
// asking it once per binary.
var Version = func() func(bin string) (string, error) {
	var mu sync.Mutex
	cache := map[string]string{}
	return func(bin string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if v, ok := cache[bin]; ok {
			return v, nil
		}
		out, err := exec.Command(bin, "-v").Output()
		if err != nil {
			return "", err
		}
		m := versionRE.FindStringSubmatch(string(out))
		if m == nil {
			return "", fmt.Errorf("no version in %q", strings.TrimSpace(string(out)))
		}
		cache[bin] = m[1]
		return m[1], nil
	}
}()

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
	dir, err := os.MkdirTemp("", "haproxytest-")
	if err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	t.Cleanup(func() {
		if os.Getenv("HAPROXYTEST_KEEP") != "" {
			t.Logf("haproxytest: HAPROXYTEST_KEEP is set, keeping %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	s := &Server{Dir: dir, bin: bin, cfg: cfg, env: env, addrs: map[string]string{}}
	// Registered after the directory's removal, so it runs before it.
	t.Cleanup(func() {
		s.Kill()
		s.mu.Lock()
		logged := s.logged
		s.mu.Unlock()
		if t.Failed() && !logged {
			t.Logf("haproxytest: output of haproxy -f %s:\n%s", s.cfg, s.Log())
		}
	})
	if err := os.WriteFile(s.extraPath(), []byte(s.extraConfig()), 0o600); err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	for attempt := 1; ; attempt++ {
		for _, name := range opts.Listen {
			port, err := FreePort("127.0.0.1")
			if err != nil {
				t.Fatalf("haproxytest: %v", err)
			}
			s.addrs[name] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		err := s.launch()
		if err == nil {
			return s
		}
		if errors.Is(err, errAddrInUse) && attempt < bindAttempts {
			continue
		}
		t.Fatalf("haproxytest: starting %s -db -f %s: %v\noutput:\n%s", s.bin, s.cfg, err, s.logOnce())
	}
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

// errAddrInUse marks a start that failed because a port was taken.
var errAddrInUse = errors.New("a port was already in use")

// launch runs haproxy and waits until the admin socket answers. On failure
// the process is gone.
func (s *Server) launch() error {
	logPath := filepath.Join(s.Dir, logName)
	// Each run starts with an empty log, so the log shown is this run's.
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		return err
	}
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	os.Remove(s.socketPath())
	// -db: stay in the foreground, one process, whatever the file says.
	cmd := exec.Command(s.bin, "-db", "-f", s.cfg, "-f", extraName)
	cmd.Dir = s.Dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range s.Env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	slices.Sort(cmd.Env)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if err := s.waitReady(p); err != nil {
		killProcess(p)
		if strings.Contains(s.Log(), "Address already in use") {
			return fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return err
	}
	return nil
}

// waitReady waits until the admin socket answers "show info". HAProxy
// binds every listener before it serves any, so then all are bound.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("haproxy exited before it was ready: %v", p.err)
		default:
		}
		out, err := s.Command("show info")
		if err == nil && strings.Contains(out, "Name: HAProxy") {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("show info answered %q", out)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the admin socket did not answer within %v: %v", startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// Kill kills HAProxy with SIGKILL and waits until it has exited: open
// connections through it break. It does nothing when HAProxy is not
// running.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return
	}
	killProcess(p)
}

// killProcess sends SIGKILL to the process group of p and waits for p.
func killProcess(p *process) {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Log returns what HAProxy wrote to stdout and stderr in its latest run:
// its warnings and alerts, and its log when the configuration sends it to
// stderr (ContribOptions does). The cleanup prints it by itself when the
// test has failed.
func (s *Server) Log() string {
	data, err := os.ReadFile(filepath.Join(s.Dir, logName))
	if err != nil {
		return fmt.Sprintf("(no output: %v)\n", err)
	}
	return string(data)
}

// logOnce returns the log for a failure message and spares the cleanup
// from printing it again.
func (s *Server) logOnce() string {
	s.mu.Lock()
	s.logged = true
	s.mu.Unlock()
	return s.Log()
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
