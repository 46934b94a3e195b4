package e2e

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// lineTimeout bounds each read and write of a transcript client.
const lineTimeout = 20 * time.Second

// lineConn is a client connection used a line at a time: the level under
// the transcript clients of each protocol (rawIMAP, rawPOP3, rawSMTP,
// opsLine, revokeIdle).
type lineConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// newLineConn wraps conn, which is closed at cleanup.
func newLineConn(t *testing.T, conn net.Conn) lineConn {
	t.Cleanup(func() { conn.Close() })
	return lineConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// dialLine connects to addr, with implicit TLS when cfg is set.
func dialLine(t *testing.T, addr string, cfg *tls.Config) lineConn {
	t.Helper()
	var conn net.Conn
	var err error
	if cfg != nil {
		conn, err = tls.Dial("tcp", addr, cfg)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return newLineConn(t, conn)
}

// line reads one line without its CRLF; an error is fatal.
func (c *lineConn) line() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(lineTimeout))
	l, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// greeting reads the server's first line and fails unless it starts with
// prefix ("* OK ", "+OK ").
func (c *lineConn) greeting(prefix string) {
	c.t.Helper()
	if g := c.line(); !strings.HasPrefix(g, prefix) {
		c.t.Fatalf("S: %s (want a greeting)", g)
	}
}

// write sends raw as it is.
func (c *lineConn) write(raw string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(lineTimeout))
	if _, err := io.WriteString(c.conn, raw); err != nil {
		c.t.Fatalf("writing: %v", err)
	}
}

// writeLine sends line and CRLF.
func (c *lineConn) writeLine(line string) {
	c.t.Helper()
	c.write(line + "\r\n")
}

// eof checks that the server closes the connection next.
func (c *lineConn) eof() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if l, err := c.br.ReadString('\n'); err == nil {
		c.t.Fatalf("want the end of the connection, got %q", l)
	}
}
