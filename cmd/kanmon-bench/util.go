//go:build unix

package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
)

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

// pinClientTLS makes both TLS targets negotiate the same thing: TLS 1.3
// with X25519 (Go would offer the hybrid X25519MLKEM768 first, which Go's
// kanmon accepts and Dovecot's OpenSSL 3.0 does not know), and a full
// handshake per connection (no session resumption), as a new client does.
func pinClientTLS(c *tls.Config) {
	c.MinVersion = tls.VersionTLS13
	c.CurvePreferences = []tls.CurveID{tls.X25519}
	c.ClientSessionCache = nil
}

// messageSize is the size of each FETCH message, headers included.
const messageSize = 1 << 20

// deliverMailbox puts n messages of exactly messageSize bytes (CRLF line
// ends, so Dovecot sends the file as it is) into bulkUser's INBOX.
func deliverMailbox(tb *toolTB, dc *dovecottest.Server, n int) {
	line := strings.Repeat("x", 76) + "\r\n"
	for i := range n {
		var b bytes.Buffer
		fmt.Fprintf(&b, "From: bench@example.org\r\nTo: %s@example.org\r\nSubject: bench message %d\r\nMessage-ID: <bench-%d@example.org>\r\nDate: %s\r\n\r\n",
			bulkUser, i+1, i+1, time.Now().Format(time.RFC1123Z))
		for b.Len()+len(line) <= messageSize-2 {
			b.WriteString(line)
		}
		for b.Len() < messageSize-2 {
			b.WriteByte('x')
		}
		b.WriteString("\r\n")
		dc.Deliver(tb, bulkUser, b.Bytes())
	}
}

// median of a copy of xs.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// settleRSS samples pid's VmRSS every 500 ms until four samples in a row
// lie within 1% (or 20 s pass) and returns the last one.
func settleRSS(pid int) int64 {
	var samples []int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := rssKiB(pid)
		if err != nil {
			return -1
		}
		samples = append(samples, r)
		if n := len(samples); n >= 4 {
			lo, hi := samples[n-4], samples[n-4]
			for _, s := range samples[n-4:] {
				lo, hi = min(lo, s), max(hi, s)
			}
			if float64(hi-lo) <= 0.01*float64(hi) || time.Now().After(deadline) {
				return r
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}
