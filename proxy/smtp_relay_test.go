package proxy_test

import (
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// After AUTH every reply is the backend's: a second AUTH gets the
// backend's 503, and a client's EHLO its real extension list.
func TestSMTPSecondAuth(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	c := dialSMTP(t, w.k.SubmissionPlain)
	c.smtpLogin("alice", w.passcode)
	c.run("C: AUTH PLAIN "+plainIR("", "alice", w.passcode), "S: 503 5.5.1 Already authenticated")
	lines := c.ehlo("client.example.org")
	if lines[0] != "Hello client.example.org" || !slices.Contains(lines, "AUTH PLAIN") {
		t.Errorf("EHLO after AUTH %q is not the backend's", lines)
	}
	expectSMTPSession(t, w, c, "alice")
}

// kanmon never acknowledges a message itself: the backend's 554 reaches
// the client and no 250 does; a 250 comes only once the backend has taken
// the message and answered.
func TestSMTPAckIsTheBackends(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	t.Run("rejected", func(t *testing.T) {
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.smtpLogin("alice", w.passcode)
		c.run("C: MAIL FROM:<alice@example.org>", "S: 250 ...", "C: RCPT TO:<"+rejectRcpt+">", "S: 250 ...", "C: DATA", "S: 354 ...")
		c.write("Subject: spam\r\n\r\nbuy now\r\n.\r\n")
		c.run("S: "+backendRejected, "C: QUIT", "S: 221 ...", "EOF")
		if n := len(w.be.messages()); n != 0 {
			t.Errorf("backend kept %d messages", n)
		}
	})
	t.Run("accepted only when the backend answers", func(t *testing.T) {
		w.be.holding.Store(true)
		defer w.be.holding.Store(false)
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.smtpLogin("alice", w.passcode)
		c.run("C: MAIL FROM:<alice@example.org>", "S: 250 ...", "C: RCPT TO:<bob@example.org>", "S: 250 ...", "C: DATA", "S: 354 ...")
		c.write("Subject: held\r\n\r\nwait for it\r\n.\r\n")
		select {
		case <-w.be.dataRead:
		case <-time.After(ioTimeout):
			t.Fatal("the backend never got the whole message")
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if l, err := c.br.ReadString('\n'); err == nil || l != "" {
			t.Fatalf("client got %q (err %v) before the backend answered", l, err)
		}
		close(w.be.hold)
		c.run("S: "+backendQueued, "C: QUIT", "S: 221 ...", "EOF")
	})
}

// PIPELINING: a transaction pipelined behind AUTH reaches the backend
// after the login, in order, and the replies come back in order.
func TestSMTPPipelinedAfterAuth(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	c := dialSMTP(t, w.k.SubmissionPlain)
	c.ehlo("client.example.org")
	c.write("AUTH PLAIN " + plainIR("", "alice", w.passcode) + "\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n")
	c.run("S: "+smtpAuthOK, "S: 250 ...", "S: 250 ...", "S: 250 ...", "S: 354 ...")
	c.write("Subject: pipelined\r\n\r\nin one go\r\n.\r\nQUIT\r\n")
	c.run("S: "+backendQueued, "S: 221 ...", "EOF")
	if m := w.be.last(t); m.user != "alice" || len(m.to) != 2 {
		t.Errorf("backend got %+v", m)
	}
}

// CHUNKING (RFC 3030): BDAT chunks, with binary content, pass through the
// relay to a backend that offers it.
func TestSMTPChunking(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	c := dialSMTP(t, w.k.SubmissionPlain)
	c.smtpLogin("alice", w.passcode)
	first := "Subject: chunks\r\n\r\n"
	second := "caf\xc3\xa9 \x00\x01 .\r\n.\r\nend\r\n"
	c.run("C: MAIL FROM:<alice@example.org> BODY=BINARYMIME", "S: 250 ...", "C: RCPT TO:<bob@example.org>", "S: 250 ...")
	c.write("BDAT " + strconv.Itoa(len(first)) + "\r\n" + first)
	c.run("S: 250 ...")
	c.write("BDAT " + strconv.Itoa(len(second)) + " LAST\r\n" + second)
	c.run("S: "+backendQueued, "C: QUIT", "S: 221 ...", "EOF")
	if got := string(w.be.last(t).data); got != first+second {
		t.Errorf("backend got %q, want %q", got, first+second)
	}
}

// The client's EHLO name reaches the backend if it is a domain or an
// address literal; otherwise kanmon's own name does.
func TestSMTPEHLONameToBackend(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	for _, tc := range []struct{ name, valid string }{
		{"client.example.org", "client.example.org"},
		{"[192.0.2.7]", "[192.0.2.7]"},
		{"[IPv6:2001:db8::7]", "[IPv6:2001:db8::7]"},
		{"not_a<domain>", ""},
	} {
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.ehlo(tc.name)
		c.run("C: AUTH PLAIN "+plainIR("", "alice", w.passcode), "S: "+smtpAuthOK)
		c.smtpSend("alice@example.org", "bob@example.org", "ehlo "+tc.name)
		got := w.be.last(t).helo
		if tc.valid != "" && got != tc.valid || tc.valid == "" && (got == tc.name || got == "") {
			t.Errorf("EHLO %q: backend got %q", tc.name, got)
		}
	}
}

// A 50 MB message streams through with bounded memory: nothing buffers it
// whole, and the backend's 250 is what the client gets. Client, kanmon and
// backend share this process, so the bound covers all three. The plain
// listener relays with splice, the TLS one through pooled buffers.
func TestSMTPLargeMessageStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB transfers")
	}
	w := newSMTPWorld(t, worldOptions{})
	t.Run("plain", func(t *testing.T) {
		c, err := smtp.Dial(w.k.SubmissionPlain)
		if err != nil {
			t.Fatal(err)
		}
		sendLarge(t, w, c)
	})
	t.Run("implicit TLS", func(t *testing.T) {
		c, err := smtp.DialTLS(w.k.SubmissionS, w.k.ClientTLS)
		if err != nil {
			t.Fatal(err)
		}
		sendLarge(t, w, c)
	})
}

// sendLarge sends a 50 MiB message as alice and checks what it cost.
func sendLarge(t *testing.T, w *smtpWorld, c *smtp.Client) {
	const size = len(genHeader) + 80*655360 // 50 MiB of lines, and the header
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	if max, ok := c.MaxMessageSize(); !ok || max != backendSize {
		t.Fatalf("SIZE through kanmon: %d %v, want the backend's %d", max, ok, backendSize)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", w.passcode)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.org", &smtp.MailOptions{Size: int64(size)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.org", nil); err != nil {
		t.Fatal(err)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := sampleHeap(&peak)
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(wc, &messageGen{left: size}); err != nil {
		t.Fatal(err)
	}
	resp, err := wc.CloseWithResponse()
	stop()
	if err != nil {
		t.Fatal(err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if resp.StatusText != strings.TrimPrefix(backendQueued, "250 ") {
		t.Errorf("250 text %q is not the backend's", resp.StatusText)
	}
	if m := w.be.last(t); m.size != int64(size) {
		t.Errorf("backend got %d bytes, want %d", m.size, size)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("50 MB message: %d MB allocated in total, heap in use grew by at most %d KB", alloc>>20, grew>>10)
	if !raceDetector && alloc > 16<<20 || grew > 16<<20 {
		t.Errorf("memory: %d bytes allocated, heap grew by %d; want both well under the 50 MB message", alloc, grew)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

// sampleHeap records the highest HeapInuse until stop is called.
func sampleHeap(peak *atomic.Uint64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// messageGen generates a message of left bytes on the fly: genHeader, then
// lines of 78 characters and CRLF.
type messageGen struct {
	left, off int
}

const genHeader = "Subject: large\r\n\r\n"

var genLine = genHeader + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 3)[:78] + "\r\n"

func (g *messageGen) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.left > 0 {
		if g.off == len(genLine) {
			g.off = len(genHeader) // later lines: body only
		}
		k := copy(p[n:min(len(p), n+g.left)], genLine[g.off:])
		n, g.off, g.left = n+k, g.off+k, g.left-k
	}
	return n, nil
}
