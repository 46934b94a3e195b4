//go:build unix

package main

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// toolTB lets this program use internal/dovecottest, which takes a
// testing.TB, outside a test. Only the methods dovecottest calls are
// implemented; a fatal error runs the cleanups (stopping Dovecot) and exits.
type toolTB struct {
	testing.TB // nil: any other method panics

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

func (t *toolTB) Helper()                         {}
func (t *toolTB) Name() string                    { return "kanmon-bench" }
func (t *toolTB) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (t *toolTB) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (t *toolTB) Failed() bool                    { t.mu.Lock(); defer t.mu.Unlock(); return t.failed }
func (t *toolTB) Errorf(format string, args ...any) {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
	t.Logf(format, args...)
}
func (t *toolTB) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	t.exit(1)
}
func (t *toolTB) Fatal(args ...any) { t.Fatalf("%s", fmt.Sprint(args...)) }
func (t *toolTB) Skipf(format string, args ...any) {
	t.Errorf("skipped: "+format, args...)
	t.exit(1)
}
func (t *toolTB) TempDir() string {
	d, err := os.MkdirTemp("", "kanmon-bench-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
func (t *toolTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// runCleanups runs the registered cleanups, last first, once.
func (t *toolTB) runCleanups() {
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

func (t *toolTB) exit(code int) {
	t.runCleanups()
	os.Exit(code)
}
