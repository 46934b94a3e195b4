//go:build unix

package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "YES": true, "": false, "false": false} {
		t.Setenv("CI", v)
		if got := InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v", v, got)
		}
	}
}

// fakeServer writes an executable script NAME into a new directory that
// prints "NAME version VERSION" and counts its runs in NAME.runs.
func fakeServer(t *testing.T, name, version string) (dir string) {
	t.Helper()
	dir = t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\necho run >> %s\necho %s version %s\n", filepath.Join(dir, name+".runs"), name, version)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func testBinary(name string, dirs ...string) *Binary {
	return &Binary{
		Name: name, Dirs: dirs, Package: "testenv", Skipping: "fake-server", InstallHint: "apt-get install " + name,
		Version: func(out string) (string, error) {
			f := strings.Fields(out)
			if len(f) != 3 {
				return "", errors.New("no version")
			}
			return f[2], nil
		},
		Supported: func(v string) error {
			if !strings.HasPrefix(v, "2.") {
				return fmt.Errorf("found %s, want 2.x", v)
			}
			return nil
		},
	}
}

func TestCheckUnavailable(t *testing.T) {
	CheckUnavailable(t, testBinary("kanmon-no-such-server"))
}

func TestFindAndRequire(t *testing.T) {
	good, old := fakeServer(t, "kanmon-fake", "2.3"), fakeServer(t, "kanmon-fake", "1.0")
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", "")
	if p, ok := testBinary("kanmon-fake").Find(); ok {
		t.Errorf("Find without Dirs found %s", p)
	}
	// Not executable: passed over.
	if err := os.Chmod(filepath.Join(old, "kanmon-fake"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := testBinary("kanmon-fake", old, good)
	if p, ok := b.Find(); !ok || p != filepath.Join(good, "kanmon-fake") {
		t.Errorf("Find = %s, %v; want the one in %s", p, ok, good)
	}
	for range 2 {
		r := &recorder{TB: t}
		if p, ok := b.Require(r); !ok || p != filepath.Join(good, "kanmon-fake") || r.skip != "" {
			t.Errorf("Require = %s, %v (skip %q)", p, ok, r.skip)
		}
	}
	if runs, _ := os.ReadFile(filepath.Join(good, "kanmon-fake.runs")); string(runs) != "run\n" { // Require's cache
		t.Errorf("--version ran %d times, want once", strings.Count(string(runs), "run"))
	}

	// Without Version and Supported, any version will do.
	r := &recorder{TB: t}
	if p, ok := (&Binary{Name: "kanmon-fake", Dirs: []string{good}}).Require(r); !ok || r.skip != "" {
		t.Errorf("Require without Version and Supported = %s, %v (skip %q)", p, ok, r.skip)
	}

	if err := os.Chmod(filepath.Join(old, "kanmon-fake"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = &recorder{TB: t}
	if _, ok := testBinary("kanmon-fake", old).Require(r); ok || !strings.Contains(r.skip, "found 1.0, want 2.x") {
		t.Errorf("Require of an unsupported version: ok %v, skip %q", ok, r.skip)
	}
	r = &recorder{TB: t}
	if _, ok := testBinary("kanmon-none", old).Require(r); ok || !strings.Contains(r.skip, "install it with: apt-get install kanmon-none") {
		t.Errorf("Require of a missing binary: ok %v, skip %q", ok, r.skip)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(3)
	if err != nil || len(ports) != 3 {
		t.Fatalf("FreePorts(3) = %v, %v", ports, err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("ports %v: not distinct and positive", ports)
		}
		seen[p] = true
	}
}

func TestRetryBind(t *testing.T) {
	inUse := markAddrInUse(errors.New("no greeting"), "bind: Address already in use\n")
	if !errors.Is(inUse, ErrAddrInUse) || !strings.Contains(inUse.Error(), "no greeting") {
		t.Errorf("markAddrInUse = %v", inUse)
	}
	other := errors.New("config error")
	if err := markAddrInUse(other, "something else"); err != other {
		t.Errorf("markAddrInUse without the message = %v", err)
	}
	for _, c := range []struct {
		errs      []error // start's results, in turn; nil after them
		wantCalls int
		want      error
	}{
		{nil, 1, nil},
		{[]error{inUse, inUse}, 3, nil},
		{[]error{other}, 1, other},
		{[]error{inUse, inUse, inUse, inUse, inUse, inUse}, BindAttempts, inUse},
	} {
		calls := 0
		err := RetryBind(func() error {
			calls++
			if calls <= len(c.errs) {
				return c.errs[calls-1]
			}
			return nil
		})
		if calls != c.wantCalls || err != c.want {
			t.Errorf("start failing with %v: %d calls, %v; want %d, %v", c.errs, calls, err, c.wantCalls, c.want)
		}
	}
}

// RetryPorts picks new ports for each attempt and stops at a success.
func TestRetryPorts(t *testing.T) {
	var got [][]int
	err := RetryPorts(2, func(ports []int) error {
		got = append(got, ports)
		if len(got) < 3 {
			return fmt.Errorf("%w: attempt %d", ErrAddrInUse, len(got))
		}
		return nil
	})
	if err != nil || len(got) != 3 {
		t.Fatalf("RetryPorts: %v after %d attempts; want success at the third", err, len(got))
	}
	for _, ports := range got {
		if len(ports) != 2 || ports[0] == ports[1] {
			t.Errorf("start got ports %v; want 2 distinct ones", ports)
		}
	}
	other := errors.New("config error")
	if err := RetryPorts(1, func([]int) error { return other }); err != other {
		t.Errorf("RetryPorts of a start failing otherwise = %v", err)
	}
}

func TestLogs(t *testing.T) {
	l := Logs{Dir: t.TempDir(), Output: "x.stderr", File: "x.log", Perm: 0o600}
	if err := os.WriteFile(filepath.Join(l.Dir, "x.log"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.reset(); err != nil {
		t.Fatal(err)
	}
	if got := l.String(); got != "" {
		t.Errorf("after reset: %q", got)
	}
	os.WriteFile(filepath.Join(l.Dir, "x.log"), []byte("log"), 0o600)
	if got := l.String(); got != "log\n" {
		t.Errorf("String with an empty output = %q", got)
	}
	os.WriteFile(filepath.Join(l.Dir, "x.stderr"), []byte("out\n"), 0o600)
	if got := l.String(); got != "out\nlog\n" {
		t.Errorf("String = %q", got)
	}
}

// launchShell runs script with sh in a new directory; it is ready once it
// has written "started".
func launchShell(t *testing.T, script string) (*Process, error) {
	t.Helper()
	logs := Logs{Dir: t.TempDir(), Output: "sh.out", File: "sh.log", Perm: 0o600}
	var r Runner
	err := r.Launch([]string{"/bin/sh", "-c", script}, logs, syscall.SIGKILL, func() error {
		if !strings.Contains(logs.String(), "started") {
			return errors.New("not started yet")
		}
		return nil
	}, nil)
	if (r.Process() == nil) != (err != nil) {
		t.Errorf("Launch returned %v, and the process is %v", err, r.Process())
	}
	return r.Process(), err
}

func TestProcessKillAndStop(t *testing.T) {
	for _, c := range []struct {
		name, script string
		stop         func(*Process)
	}{
		{"Kill", "", (*Process).Kill},
		{"Stop", "", func(p *Process) { p.Stop(time.Minute) }},
		// The shell and its sleep ignore SIGTERM: Stop kills them after
		// the grace.
		{"Stop after grace", "trap '' TERM; ", func(p *Process) { p.Stop(100 * time.Millisecond) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := launchShell(t, c.script+"sleep 60 & echo started; wait")
			if err != nil {
				t.Fatal(err)
			}
			if !GroupAlive(p.Pid()) {
				t.Fatal("GroupAlive is false while the shell runs")
			}
			if !p.Running() {
				t.Error("Running is false while the shell runs")
			}
			begin := time.Now()
			c.stop(p)
			if d := time.Since(begin); d > 10*time.Second {
				t.Errorf("%s took %v", c.name, d)
			}
			select {
			case <-p.Exited():
			default:
				t.Errorf("%s returned before the process exited", c.name)
			}
			if p.Running() {
				t.Errorf("Running after %s", c.name)
			}
			if GroupAlive(p.Pid()) {
				t.Errorf("the group's sleep survived %s", c.name)
				syscall.Kill(-p.Pid(), syscall.SIGKILL)
			}
		})
	}
}

func TestLaunchFails(t *testing.T) {
	if (*Process)(nil).Running() {
		t.Error("a nil Process is running")
	}
	if _, err := launchShell(t, "exit 3"); err == nil || !strings.Contains(err.Error(), "sh exited before it was ready: exit status 3") {
		t.Errorf("Launch of a shell that exits: %v", err)
	}
	_, err := launchShell(t, "echo 'bind: Address already in use' >&2; exit 1")
	if !errors.Is(err, ErrAddrInUse) {
		t.Errorf("Launch of a shell that found its port taken: %v", err)
	}
}

// The goroutine that waits for the process runs the waiting function.
func TestLaunchWaiting(t *testing.T) {
	logs := Logs{Dir: t.TempDir(), Output: "sh.out", File: "sh.log", Perm: 0o600}
	ran := make(chan bool, 1)
	var r Runner
	err := r.Launch([]string{"/bin/sh", "-c", "sleep 60"}, logs, syscall.SIGKILL, func() error { return nil }, func(wait func()) {
		ran <- true
		wait()
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Process().Kill()
	select {
	case <-ran:
	default:
		t.Error("waiting did not run")
	}
}

func TestWaitReadyTimesOut(t *testing.T) {
	p, err := launchShell(t, "echo started; sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	notYet := errors.New("not yet")
	err = p.waitReady(50*time.Millisecond, 10*time.Millisecond, func() error { return notYet })
	if !errors.Is(err, notYet) || !strings.Contains(err.Error(), "not ready within 50ms") {
		t.Errorf("waitReady of a process never ready: %v", err)
	}
}

func TestWaitFor(t *testing.T) {
	calls := 0
	WaitFor(t, 5*time.Second, "the third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("check called %d times, want 3", calls)
	}
	r := &recorder{TB: t}
	WaitFor(r, 50*time.Millisecond, "never", func() error { return errors.New("still not") })
	if !strings.Contains(r.fatal, "waited 50ms for never: still not") {
		t.Errorf("WaitFor of a check that never succeeds: fatal %q", r.fatal)
	}
}

// A binary that prints its version only for VersionArgs.
func TestVersionArgs(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\n[ \"$1\" = -v ] || { echo \"unknown option $1\" >&2; exit 1; }\necho kanmon-v version 2.5\n"
	if err := os.WriteFile(filepath.Join(dir, "kanmon-v"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kanmon-v")
	b := testBinary("kanmon-v", dir)
	if _, err := b.VersionOf(path); err == nil || !strings.Contains(err.Error(), path+" --version: exit status 1") {
		t.Errorf("VersionOf without VersionArgs: %v", err)
	}
	b = testBinary("kanmon-v", dir)
	b.VersionArgs = []string{"-v"}
	if v, err := b.VersionOf(path); v != "2.5" || err != nil {
		t.Errorf("VersionOf with VersionArgs -v = %q, %v", v, err)
	}
	if err := b.Check(path); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// failedTest stands in for a test that has failed, and keeps what it logs.
type failedTest struct {
	*recorder
	logs []string
}

func (f *failedTest) Failed() bool { return true }
func (f *failedTest) Logf(format string, a ...any) {
	f.logs = append(f.logs, fmt.Sprintf(format, a...))
}

func TestFailureLog(t *testing.T) {
	var f FailureLog
	ft := &failedTest{recorder: &recorder{TB: t}}
	f.Cleanup(ft, "pkg: log of x", func() string { return "the log\n" })
	if len(ft.logs) != 1 || ft.logs[0] != "pkg: log of x:\nthe log\n" {
		t.Errorf("Cleanup of a failed test logged %q", ft.logs)
	}
	f.Cleanup(t, "pkg: log of x", func() string { t.Error("a passed test's cleanup read the log"); return "" })
	if got := f.Shown("the log\n"); got != "the log\n" {
		t.Errorf("Shown = %q", got)
	}
	ft.logs = nil
	f.Cleanup(ft, "pkg: log of x", func() string { return "the log\n" })
	if len(ft.logs) != 0 {
		t.Errorf("Cleanup after Shown logged %q", ft.logs)
	}
}

func TestMakeDir(t *testing.T) {
	var dir string
	t.Run("remove", func(t *testing.T) {
		t.Setenv("KANMONTEST_KEEP", "")
		var err error
		if dir, err = MakeDir(t, "kanmontest", true); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || !strings.HasPrefix(filepath.Base(dir), "kanmontest-") {
			t.Errorf("MakeDir = %s: %v, %v", dir, fi, err)
		}
		if len(dir) > 60 {
			t.Errorf("MakeDir = %s: %d bytes, want a short path", dir, len(dir))
		}
		if !Searchable(filepath.Dir(dir)) {
			t.Errorf("MakeDir(others) = %s: its parent is not searchable", dir)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after the test: %v; want it removed", dir, err)
	}
	t.Run("keep", func(t *testing.T) {
		t.Setenv("KANMONTEST_KEEP", "1")
		var err error
		if dir, err = MakeDir(t, "kanmontest", false); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("%s after the test with KANMONTEST_KEEP=1: %v; want it kept", dir, err)
	}
	os.RemoveAll(dir)
}

// Logs with Keep hold every run; a taken port counts only in this run's.
func TestLaunchKeepLogs(t *testing.T) {
	logs := Logs{Dir: t.TempDir(), Output: "sh.out", Perm: 0o600, Keep: true}
	var r Runner
	run := func(script string) error {
		return r.Start(Launch{Cmd: exec.Command("/bin/sh", "-c", script), Logs: logs, DeathSig: syscall.SIGKILL,
			Ready: func() error { return errors.New("never") }, Timeout: time.Second})
	}
	if err := logs.Append("run 1\n"); err != nil {
		t.Fatal(err)
	}
	if err := run("echo 'bind: Address already in use'; exit 1"); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("run 1: %v; want ErrAddrInUse", err)
	}
	logs.Append("run 2\n")
	if err := run("echo 'no such file'; exit 1"); err == nil || errors.Is(err, ErrAddrInUse) {
		t.Errorf("run 2: %v; want an error, not ErrAddrInUse (that was run 1)", err)
	}
	if got, want := logs.String(), "run 1\nbind: Address already in use\nrun 2\nno such file\n"; got != want {
		t.Errorf("logs = %q, want %q", got, want)
	}
}

// Start keeps the caller's Credential, and still puts the server in a group
// of its own with the parent-death signal.
func TestStartKeepsCredential(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	if uid == 0 {
		uid, gid = 65534, 65534 // nobody, nogroup
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	dir, err := MakeDir(t, "testenv", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil { // for the server to run in
		t.Fatal(err)
	}
	logs := Logs{Dir: dir, Output: "sh.out", Perm: 0o600}
	cmd := exec.Command("/bin/sh", "-c", "echo started $(id -u) $(id -g); exec sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var r Runner
	err = r.Start(Launch{Cmd: cmd, Logs: logs, DeathSig: syscall.SIGTERM, Ready: func() error {
		if !strings.Contains(logs.String(), "started") {
			return errors.New("not started yet")
		}
		return nil
	}})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	p := r.Process()
	defer p.Kill()
	if got, want := logs.String(), fmt.Sprintf("started %d %d\n", uid, gid); got != want {
		t.Errorf("the server says %q, want %q", got, want)
	}
	if !GroupAlive(p.Pid()) {
		t.Error("the server is not in a process group of its own")
	}
	attr := p.cmd.SysProcAttr
	if attr.Credential != cred || !attr.Setpgid {
		t.Errorf("SysProcAttr = %+v; want the Credential kept and Setpgid", attr)
	}
	if runtime.GOOS == "linux" && attr.Pdeathsig != syscall.SIGTERM {
		t.Errorf("Pdeathsig = %v, want SIGTERM", attr.Pdeathsig)
	}
}
