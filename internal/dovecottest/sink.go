package dovecottest

import (
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SinkMessage is one message a Sink accepted.
type SinkMessage struct {
	// From is the MAIL FROM address.
	From string
	// To holds the RCPT TO addresses.
	To []string
	// Data is the message as received after DATA.
	Data []byte
}

// Sink is a minimal SMTP server on a loopback port that accepts every message
// and keeps it, to serve as Options.SubmissionRelay. It needs no
// authentication and offers no TLS. It is closed at t.Cleanup.
type Sink struct {
	// Addr is the sink's "127.0.0.1:port".
	Addr string

	mu      sync.Mutex
	msgs    []SinkMessage
	changed chan struct{} // closed and replaced on every new message
}

// StartSink starts a Sink and closes it when the test ends.
func StartSink(t testing.TB) *Sink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dovecottest: sink: %v", err)
	}
	k := &Sink{Addr: l.Addr().String(), changed: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: k}, nil
	}))
	srv.Domain = "sink.localhost"
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return k
}

// Messages returns a copy of the messages received so far.
func (k *Sink) Messages() []SinkMessage {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]SinkMessage(nil), k.msgs...)
}

// Wait returns the messages once at least n have arrived, or fails the test
// after timeout.
func (k *Sink) Wait(t testing.TB, n int, timeout time.Duration) []SinkMessage {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		k.mu.Lock()
		msgs, changed := append([]SinkMessage(nil), k.msgs...), k.changed
		k.mu.Unlock()
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("dovecottest: sink got %d messages within %v, want %d", len(msgs), timeout, n)
		}
	}
}

// sinkSession collects one SMTP transaction at a time.
type sinkSession struct {
	sink *Sink
	cur  SinkMessage
}

func (s *sinkSession) Reset()        { s.cur = SinkMessage{} }
func (s *sinkSession) Logout() error { return nil }

func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.cur = SinkMessage{From: from}
	return nil
}

func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.To = append(s.cur.To, to)
	return nil
}

func (s *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = data
	k := s.sink
	k.mu.Lock()
	k.msgs = append(k.msgs, s.cur)
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
	s.cur = SinkMessage{}
	return nil
}
