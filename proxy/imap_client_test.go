package proxy_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

func message(subject, body string) []byte {
	return []byte("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: " + subject +
		"\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-Id: <" + subject + "@example.org>\r\n\r\n" + body + "\r\n")
}

// fetchBody returns BODY[] of message seq.
func fetchBody(t *testing.T, c *imapclient.Client, seq uint32) []byte {
	t.Helper()
	section := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		t.Fatalf("FETCH %d: %v", seq, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("FETCH %d: %d messages", seq, len(msgs))
	}
	return msgs[0].FindBodySection(section)
}

// A real IMAP client through kanmon: login with a passcode, then SELECT,
// FETCH, APPEND with a literal, IDLE with pushes from other sessions,
// LOGOUT, all relayed to the backend.
func TestIMAPClientThroughRelay(t *testing.T) {
	w := newWorld(t, worldOptions{})
	first := message("first", "Hello through kanmon.")
	if err := w.mem.Deliver("alice", first); err != nil {
		t.Fatal(err)
	}

	exists := make(chan uint32, 16)
	c, err := imapclient.DialTLS(w.k.IMAPS, &imapclient.Options{
		TLSConfig: w.k.ClientTLS,
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", strings.ToLower(w.passcode)).Wait(); err != nil {
		t.Fatalf("LOGIN with passcode: %v", err)
	}
	if !c.Caps().Has(imap.CapIdle) {
		t.Fatalf("after login the client does not see the backend's IDLE: %v", c.Caps())
	}
	mbox, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	if mbox.NumMessages != 1 {
		t.Fatalf("INBOX has %d messages, want 1", mbox.NumMessages)
	}
	if got := fetchBody(t, c, 1); !bytes.Equal(got, first) {
		t.Fatalf("FETCH BODY[]:\n got %q\nwant %q", got, first)
	}

	// APPEND a message large enough to take many TLS records.
	big := message("appended", strings.Repeat("All work and no play. ", 12000))
	kanmontest.Append(t, c, "INBOX", big)
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if got := fetchBody(t, c, 2); !bytes.Equal(got, big) {
		t.Fatalf("FETCH of the appended message: %d bytes, want %d", len(got), len(big))
	}
	drain(exists)

	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	if err := w.mem.Deliver("alice", message("pushed", "New mail while idling.")); err != nil {
		t.Fatal(err)
	}
	waitExists(t, exists, 3)

	// A second client, by STARTTLS and AUTHENTICATE PLAIN, appends.
	c2, err := imapclient.DialStartTLS(w.k.IMAPStartTLS, &imapclient.Options{TLSConfig: w.k.ClientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Authenticate(sasl.NewPlainClient("", "alice", w.passcode)); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN: %v", err)
	}
	m4 := message("second-session", "From another session.")
	kanmontest.Append(t, c2, "INBOX", m4)
	waitExists(t, exists, 4)
	if err := c2.Logout().Wait(); err != nil {
		t.Fatalf("LOGOUT of the second session: %v", err)
	}

	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE end: %v", err)
	}
	if got := fetchBody(t, c, 4); !bytes.Equal(got, m4) {
		t.Fatalf("FETCH 4: %q", got)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("LOGOUT: %v", err)
	}
	select {
	case <-c.Closed():
	case <-time.After(ioTimeout):
		t.Fatal("connection still open after LOGOUT")
	}
}

func drain(ch chan uint32) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func waitExists(t *testing.T, ch chan uint32, want uint32) {
	t.Helper()
	timeout := time.After(ioTimeout)
	for {
		select {
		case n := <-ch:
			if n == want {
				return
			}
		case <-timeout:
			t.Fatalf("no * %d EXISTS while idling", want)
		}
	}
}
