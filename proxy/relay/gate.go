package relay

import (
	"net"
)

// SpliceMin is the smallest run of bytes worth a splice (two system calls
// through a pipe). A Gate's Splice should refuse a shorter run: it is
// copied through user space with the lines around it.
const SpliceMin = 4 << 10

// A Gate stands between the backend→client direction and the client.
// Every byte the relay sends the client passes through it, so it can
// follow the stream, count it, and refuse to pass more (a session being
// revoked). The session registry's gate follows IMAP responses, so that
// a BYE it writes itself never lands inside one.
type Gate interface {
	// Write sends p to the client, or refuses with an error that ends
	// the direction.
	Write(p []byte) (int, error)
	// CloseWrite passes the end of the backend's stream on to the
	// client (a half-close), unless the gate has taken over the client.
	CloseWrite() error
	// Splice is offered queued bytes waiting at the backend socket, when
	// both sockets are plain TCP. It either calls move once, with how
	// many of them may go to the client kernel-side, and returns what
	// move returned with spliced = true; or returns spliced = false, and
	// the relay copies the bytes through Write instead. move runs while
	// the gate holds whatever keeps its Write and its own writes apart.
	Splice(queued int64, move func(n int64) (int64, error)) (n int64, spliced bool, err error)
}

// gatedConn is the client as the backend→client direction sees it when a
// Gate stands in front: writes and half-closes go through the gate,
// everything else (deadlines, addresses) to the connection.
type gatedConn struct {
	net.Conn
	gate Gate
}

// Write sends p through the gate.
func (g *gatedConn) Write(p []byte) (int, error) { return g.gate.Write(p) }

// CloseWrite half-closes through the gate.
func (g *gatedConn) CloseWrite() error { return g.gate.CloseWrite() }
