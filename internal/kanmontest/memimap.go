package kanmontest

import (
	"testing"

	"github.com/kanmon-mail/kanmon/internal/memimap"
)

// StartMemIMAP starts an in-memory IMAP backend (internal/memimap) on a
// free loopback port, with the master credentials and users (name to
// password), and returns it and its address. It is closed at cleanup.
func StartMemIMAP(t testing.TB, masterUser, masterPassword string, users map[string]string) (*memimap.Server, string) {
	t.Helper()
	mem := memimap.New(masterUser, masterPassword)
	for user, pw := range users {
		if err := mem.AddUser(user, pw); err != nil {
			t.Fatal(err)
		}
	}
	addr, err := mem.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem, addr
}
