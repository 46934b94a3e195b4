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
// 2449 §4, and a client that stops sending must be let go. (The lines of
// a multi-line reply have no status, so their shape is not checked.)
func FuzzPOP3PreAuth(f *testing.F) {
	w := newPOP3World(f, worldOptions{})
	fuzzFront(f, w.k.POP3Plain, w.k.Logs, nil,
		"CAPA\r\nNOOP\r\nQUIT\r\n",
		"USER alice\r\nPASS "+w.passcode+"\r\nLIST\r\nQUIT\r\n",
		"USER carol\r\nPASS "+carolPW+"\r\nSTAT\r\n",
		"AUTH PLAIN "+plainIR("", "alice", w.passcode)+"\r\nRETR 1\r\n",
		"AUTH PLAIN\r\n"+plainIR("carol", "alice", "x")+"\r\n",
		"AUTH LOGIN\r\n"+b64("alice")+"\r\n*\r\n",
		"AUTH\r\nAUTH CRAM-MD5\r\nAPOP a b\r\n",
		"STLS\r\nUSER\r\nPASS\r\n",
		"USER a\x00b\r\nPASS \xff\xfe\r\n",
		strings.Repeat("x", 300)+"\r\n",
		"NOOP\nNOOP\r\rNOOP\r\n",
	)
}

// FuzzSMTPPreAuth sends arbitrary client bytes to the pre-auth SMTP front
// (and, after a login, through the relay to the go-smtp backend).
// Whatever arrives, the session must not panic, every reply line must fit
// RFC 5321 §4.5.3.1.5 and look like an SMTP reply line, and a client that
// stops sending must be let go.
func FuzzSMTPPreAuth(f *testing.F) {
	w := newSMTPWorld(f, worldOptions{})
	fuzzFront(f, w.k.SubmissionPlain, w.k.Logs, smtpReplyLine,
		"EHLO a.example\r\nNOOP\r\nRSET\r\nHELP\r\nQUIT\r\n",
		"EHLO a\r\nAUTH PLAIN "+plainIR("", "alice", w.passcode)+"\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO a\r\nAUTH LOGIN "+b64("carol")+"\r\n"+b64(carolPW)+"\r\nBDAT 3 LAST\r\nabc",
		"EHLO a\r\nAUTH PLAIN\r\n"+plainIR("carol", "alice", "x")+"\r\nAUTH LOGIN\r\n*\r\n",
		"EHLO a\r\nAUTH\r\nAUTH CRAM-MD5\r\nAUTH PLAIN =\r\n",
		"STARTTLS\r\nAUTH PLAIN\r\nMAIL FROM:<>\r\n",
		"BDAT 99999999999 LAST\r\nxyz",
		"BDAT x\r\nEHLO [IPv6:::1]\r\nEHLO a\x00b\r\n",
		strings.Repeat("x", 600)+"\r\n",
		"NOOP\nNOOP\r\rNOOP\r\n",
	)
}

// fuzzFront fuzzes the line-based front listening at addr: it writes the
// input, half-closes, and reads every reply line until kanmon closes.
// Each line must end in CRLF, fit 512 octets and, if replyLine is set,
// satisfy it; the session must end within ioTimeout and never panic
// (logs is kanmon's log).
func fuzzFront(f *testing.F, addr string, logs func() string, replyLine func(string) bool, seeds ...string) {
	for _, seed := range seeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := net.DialTimeout("tcp", addr, ioTimeout)
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
			if len(line) > 512 || !strings.HasSuffix(line, "\r\n") || (replyLine != nil && !replyLine(line)) {
				t.Fatalf("reply line of %d octets, without CRLF or not a reply: %.80q", len(line), line)
			}
		}
		if log := logs(); strings.Contains(log, "session panic") {
			t.Fatalf("session panicked:\n%s", log)
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
