package auth

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A cached store parses the file once while it stays the same, and sees
// every change: a locked Update (a rename), an edit in place, a broken
// file (an error, then recovery) and a removed file.
func TestCachedStoreReadsOnlyChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.toml")
	cached, plain := OpenCachedStore(path), OpenStore(path)

	a, err := cached.Read()
	if err != nil || len(a.Accounts) != 0 {
		t.Fatalf("no file: %v, %v", a, err)
	}
	if _, err := EnableTwoFA(plain, "alice"); err != nil {
		t.Fatal(err)
	}
	first, err := cached.Read()
	if err != nil || first.Lookup("alice") == nil {
		t.Fatalf("after enable: %v", err)
	}
	if again, _ := cached.Read(); again != first {
		t.Errorf("an unchanged file was parsed again")
	}

	if _, err := EnableTwoFA(plain, "bob"); err != nil {
		t.Fatal(err)
	}
	if a, _ := cached.Read(); a == first || a.Lookup("bob") == nil {
		t.Errorf("an Update (rename) was not seen")
	}

	// An editor writing in place: same inode, other size.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), `user = "bob"`, `user = "bobby"`, 1)
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if a, _ := cached.Read(); a.Lookup("bobby") == nil {
		t.Errorf("an edit in place was not seen")
	}

	if err := os.WriteFile(path, []byte(edited+"\nbogus = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cached.Read(); err == nil || !strings.Contains(err.Error(), "accounts.toml:") {
		t.Errorf("a broken file: %v, want a file:line error", err)
	}
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if a, err := cached.Read(); err != nil || a.Lookup("alice") == nil {
		t.Errorf("after the repair: %v", err)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if a, err := cached.Read(); err != nil || len(a.Accounts) != 0 {
		t.Errorf("a removed file: %d accounts, %v", len(a.Accounts), err)
	}
}

// BenchmarkCachedStatus is a portal page's account lookup in a file of
// 5,000 accounts: a stat, not a parse.
func BenchmarkCachedStatus(b *testing.B) {
	path := filepath.Join(b.TempDir(), "accounts.toml")
	var sb strings.Builder
	for i := range 5000 {
		sb.WriteString("[[account]]\nuser = \"user" + strconv.Itoa(i) + "\"\nenabled = 2026-11-25T12:00:00Z\n\n")
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	s := OpenCachedStore(path)
	b.ResetTimer()
	for range b.N {
		if st, err := Status(s, "user4999"); err != nil || !st.On {
			b.Fatal(st, err)
		}
	}
}
