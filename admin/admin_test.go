package admin

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestReloadAndLockoutRoundTrip(t *testing.T) {
	dir := t.TempDir()
	reloads := 0
	var cleared string
	srv, err := Listen(dir, Handlers{
		Reload: func() error {
			reloads++
			if reloads == 2 {
				return errors.New("kanmon.toml:3: unknown key \"x\"")
			}
			return nil
		},
		LockoutList:  func() ([]string, error) { return []string{"ip 192.0.2.1 failures=30"}, nil },
		LockoutClear: func(target string) (int, error) { cleared = target; return 2, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}
	c := NewClient(dir)
	if err := c.Reload(); err != nil {
		t.Fatalf("first reload: %v", err)
	}
	if err := c.Reload(); err == nil || err.Error() != "kanmon.toml:3: unknown key \"x\"" {
		t.Fatalf("failed reload should carry the server's reason, got %v", err)
	}
	lines, err := c.LockoutList()
	if err != nil || !reflect.DeepEqual(lines, []string{"ip 192.0.2.1 failures=30"}) {
		t.Fatalf("list: %v %v", lines, err)
	}
	n, err := c.LockoutClear("2001:db8::/64")
	if err != nil || n != 2 || cleared != "2001:db8::/64" {
		t.Fatalf("clear: n=%d err=%v target=%q", n, err, cleared)
	}
}

func TestNotRunning(t *testing.T) {
	if err := NewClient(t.TempDir()).Reload(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("got %v, want ErrNotRunning", err)
	}
}

func TestSecondServerRefused(t *testing.T) {
	dir := t.TempDir()
	srv, err := Listen(dir, Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := Listen(dir, Handlers{}); err == nil {
		t.Fatal("a second server on the same state_dir should be refused")
	}
	if err := NewClient(dir).Reload(); err == nil {
		t.Fatal("nil Reload handler should answer an error")
	}
}
