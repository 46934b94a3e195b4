package proxy

import (
	"context"
	"net"
	"sync"
	"time"
)

// How shutdown (the end of Serve's ctx) reaches a connection: a session
// that has not logged in is interrupted in whatever read it is blocked in
// (an expired read deadline), says goodbye in its protocol's words and
// ends; a logged-in session is left to drain, and CloseSessions
// (registry.go) ends it when the drain is over.

// readInterrupt interrupts the reads of a connection when ctx ends, until
// the connection is handed to the relay.
type readInterrupt struct {
	conn net.Conn
	stop func() bool
	done chan struct{} // closed once the interrupt has run
	once sync.Once
}

// interruptReads arms the interrupt of conn's reads for when ctx ends.
func interruptReads(ctx context.Context, conn net.Conn) *readInterrupt {
	ri := &readInterrupt{conn: conn, done: make(chan struct{})}
	ri.stop = context.AfterFunc(ctx, func() {
		defer close(ri.done)
		_ = conn.SetReadDeadline(time.Now())
	})
	return ri
}

// disarm ends the interrupt for a session about to relay: shutdown no
// longer touches its reads, and a read deadline the interrupt already set
// is cleared. Calling it again does nothing.
func (ri *readInterrupt) disarm() {
	if ri == nil {
		return
	}
	ri.once.Do(func() {
		if ri.stop() {
			return
		}
		<-ri.done
		_ = ri.conn.SetReadDeadline(time.Time{})
	})
}

// release disarms the interrupt when the connection ends.
func (ri *readInterrupt) release() {
	if ri != nil {
		ri.once.Do(func() { ri.stop() })
	}
}
