//go:build unix

package testenv

import (
	"testing"
	"time"
)

// WaitFor calls check every 20 ms until it returns nil, and fails the test
// with check's last error when that takes longer than timeout. It is for
// waiting until a server, or what a test runs against it, has reached a
// state.
func WaitFor(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %v", timeout, what, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
