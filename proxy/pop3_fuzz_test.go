package proxy_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzPOP3PreAuth sends arbitrary client bytes to the pre-auth POP3 front
// (and, after a login, through the relay to the fake backend). Whatever
// arrives, the session must not panic, every reply line must fit RFC
// 2449 §4 and look like a POP3 reply, and a client that stops sending
// must be let go.
func FuzzPOP3PreAuth(f *testing.F) {
	w := newPOP3World(f, worldOptions{})
	for _, seed := range []string{
		"CAPA\r\nNOOP\r\nQUIT\r\n",
		"USER alice\r\nPASS " + w.passcode + "\r\nLIST\r\nQUIT\r\n",
		"USER carol\r\nPASS " + carolPW + "\r\nSTAT\r\n",
		"AUTH PLAIN " + plainIR("", "alice", w.passcode) + "\r\nRETR 1\r\n",
		"AUTH PLAIN\r\n" + plainIR("carol", "alice", "x") + "\r\n",
		"AUTH LOGIN\r\n" + b64("alice") + "\r\n*\r\n",
		"AUTH\r\nAUTH CRAM-MD5\r\nAPOP a b\r\n",
		"STLS\r\nUSER\r\nPASS\r\n",
		"USER a\x00b\r\nPASS \xff\xfe\r\n",
		strings.Repeat("x", 300) + "\r\n",
		"NOOP\nNOOP\r\rNOOP\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := net.DialTimeout("tcp", w.k.POP3Plain, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(ioTimeout))
		go func() {
			_, _ = conn.Write(input)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		br := bufio.NewReader(conn)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("session still open %v after the client stopped sending", ioTimeout)
				}
				break
			}
			if len(line) > 512 || !strings.HasSuffix(line, "\r\n") {
				t.Fatalf("reply line of %d octets or without CRLF: %.80q", len(line), line)
			}
		}
		if strings.Contains(w.k.Logs(), "session panic") {
			t.Fatalf("session panicked:\n%s", w.k.Logs())
		}
	})
}
