//go:build linux

package relay

import (
	"net"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/loopback"
)

// The poller never touches a socket closed while parked: its entry goes
// with remove, and a closed socket has left the epoll set by itself.
func TestPollerRemoveAfterClose(t *testing.T) {
	p := &Poller{}
	a, b := loopback.Pair(t)
	raw, err := a.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	woken := make(chan uint64, 1)
	id, err := p.add(raw, wakeFunc(func(id uint64) { woken <- id }))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if !p.remove(id) {
		t.Error("remove: the entry was gone")
	}
	if p.remove(id) {
		t.Error("a second remove found the entry")
	}
	if p.ep != nil {
		t.Error("epoll instance still open with nothing parked")
	}
	// A parked socket that becomes readable wakes its entry once.
	c, d := loopback.Pair(t)
	raw, err = c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	id, err = p.add(raw, wakeFunc(func(id uint64) { woken <- id }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-woken:
		if got != id {
			t.Errorf("woken id %d, want %d", got, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no wake for a readable socket")
	}
	if p.remove(id) {
		t.Error("remove found an entry already woken")
	}
	_ = b
}

// wakeFunc is a waker made of a function.
type wakeFunc func(id uint64)

func (f wakeFunc) wake(id uint64) { f(id) }
