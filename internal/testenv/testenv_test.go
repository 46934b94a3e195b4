//go:build unix

package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
			if GroupAlive(p.Pid()) {
				t.Errorf("the group's sleep survived %s", c.name)
				syscall.Kill(-p.Pid(), syscall.SIGKILL)
			}
		})
	}
}

func TestLaunchFails(t *testing.T) {
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
