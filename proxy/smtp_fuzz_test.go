package proxy_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzSMTPPreAuth sends arbitrary client bytes to the pre-auth SMTP front
// (and, after a login, through the relay to the go-smtp backend).
// Whatever arrives, the session must not panic, every reply line must fit
// RFC 5321 §4.5.3.1.5 and look like an SMTP reply line, and a client that
// stops sending must be let go.
func FuzzSMTPPreAuth(f *testing.F) {
	w := newSMTPWorld(f, worldOptions{})
	for _, seed := range []string{
		"EHLO a.example\r\nNOOP\r\nRSET\r\nHELP\r\nQUIT\r\n",
		"EHLO a\r\nAUTH PLAIN " + plainIR("", "alice", w.passcode) + "\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO a\r\nAUTH LOGIN " + b64("carol") + "\r\n" + b64(carolPW) + "\r\nBDAT 3 LAST\r\nabc",
		"EHLO a\r\nAUTH PLAIN\r\n" + plainIR("carol", "alice", "x") + "\r\nAUTH LOGIN\r\n*\r\n",
		"EHLO a\r\nAUTH\r\nAUTH CRAM-MD5\r\nAUTH PLAIN =\r\n",
		"STARTTLS\r\nAUTH PLAIN\r\nMAIL FROM:<>\r\n",
		"BDAT 99999999999 LAST\r\nxyz",
		"BDAT x\r\nEHLO [IPv6:::1]\r\nEHLO a\x00b\r\n",
		strings.Repeat("x", 600) + "\r\n",
		"NOOP\nNOOP\r\rNOOP\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := net.DialTimeout("tcp", w.k.SubmissionPlain, ioTimeout)
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
			if len(line) > 512 || !strings.HasSuffix(line, "\r\n") || !smtpReplyLine(line) {
				t.Fatalf("reply line of %d octets, without CRLF or not a reply: %.80q", len(line), line)
			}
		}
		if strings.Contains(w.k.Logs(), "session panic") {
			t.Fatalf("session panicked:\n%s", w.k.Logs())
		}
	})
}

// smtpReplyLine reports whether line starts like an SMTP reply line: a
// code and then a space, a hyphen or the line end (RFC 5321 §4.2).
func smtpReplyLine(line string) bool {
	if len(line) < 5 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
		return false
	}
	return line[3] == ' ' || line[3] == '-' || line[3:] == "\r\n"
}
