package kanmontest

import (
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"
)

// Append APPENDs msg to mailbox with c and waits for the OK.
func Append(t testing.TB, c *imapclient.Client, mailbox string, msg []byte) {
	t.Helper()
	ac := c.Append(mailbox, int64(len(msg)), nil)
	if _, err := ac.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := ac.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Wait(); err != nil {
		t.Fatalf("APPEND: %v", err)
	}
}
