package auth

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkClientBufferSeen is what a refused or passthrough login adds
// to the login path: one sighting into the in-memory buffer. "same" is a
// stale client knocking again (its row waits already); "accounts" is a
// sighting for a new account each time (a passthrough storm over many
// users), which grows the buffer up to ClientPendingMax.
func BenchmarkClientBufferSeen(b *testing.B) {
	now := time.Now()
	c := PasswordClient{Protocol: "imap", Name: "Thunderbird", Version: "115.0", IP: "192.0.2.7", Last: now, Count: 1}
	b.Run("same", func(b *testing.B) {
		buf := NewClientBuffer(0)
		for b.Loop() {
			buf.Seen(ClientRefused, "alice", c, now)
		}
	})
	b.Run("accounts", func(b *testing.B) {
		buf := NewClientBuffer(0)
		users := make([]string, 4096)
		for i := range users {
			users[i] = "user" + strconv.Itoa(i)
		}
		i := 0
		for b.Loop() {
			buf.Seen(ClientPassword, users[i%len(users)], c, now)
			i++
		}
	})
}
