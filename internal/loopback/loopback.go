// Package loopback gives tests connected TCP pairs on 127.0.0.1: real
// sockets, so that what needs a socket (splice, SIOCINQ, epoll, TLS)
// works as it does in production.
package loopback

import (
	"net"
	"testing"
)

// Pair returns the two ends of a TCP connection on loopback: a dialled,
// b accepted. Both are closed at test cleanup.
func Pair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
