//go:build unix

package dovecottest

import (
	"fmt"
	"io"
	"log"
	"net"
	"strings"
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
	deliver *Server       // set by DeliverTo
	t       testing.TB    // the test that started the sink
}

// StartSink starts a Sink and closes it when the test ends.
func StartSink(t testing.TB) *Sink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dovecottest: sink: %v", err)
	}
	k := &Sink{Addr: l.Addr().String(), changed: make(chan struct{}), t: t}
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
	if err := k.deliverAll(s.cur); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: err.Error()}
	}
	k.mu.Lock()
	k.msgs = append(k.msgs, s.cur)
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
	s.cur = SinkMessage{}
	return nil
}

// DeliverTo makes the sink deliver every message it accepts into s, as a
// mail server's local delivery would: into the INBOX of each recipient
// whose local part (before "@") names a user of s. Delivery happens before
// the sink answers the message's DATA, so a client whose submission
// succeeded finds the message in the recipient's INBOX. Other recipients
// are only kept, as before. A failed delivery answers DATA with a 451.
//
// Dovecot needs the sink's address before it starts, and the sink needs
// the running Dovecot to deliver, so this is set after both have started.
func (k *Sink) DeliverTo(s *Server) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.deliver = s
}

// deliverAll delivers m to each of its recipients that is a user of the
// DeliverTo server.
func (k *Sink) deliverAll(m SinkMessage) error {
	k.mu.Lock()
	s := k.deliver
	k.mu.Unlock()
	if s == nil {
		return nil
	}
	for _, rcpt := range m.To {
		local, _, _ := strings.Cut(rcpt, "@")
		if !s.users[strings.ToLower(local)] {
			continue
		}
		if err := deliverFrom(k.t, s, local, m.Data); err != nil {
			return err
		}
	}
	return nil
}

// deliverFrom runs Server.Deliver on the sink's own goroutine, where the
// test's Fatalf must not run (it would end that goroutine, not the test):
// a failure comes back as an error instead.
func deliverFrom(t testing.TB, s *Server, user string, data []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(deliverFailure)
			if !ok {
				panic(r)
			}
			err = f
		}
	}()
	s.Deliver(fatalAsPanic{t}, user, data)
	return nil
}

// deliverFailure is a Fatalf of Server.Deliver called through fatalAsPanic.
type deliverFailure string

func (f deliverFailure) Error() string { return string(f) }

// fatalAsPanic is a testing.TB whose Fatalf panics with a deliverFailure,
// for deliverFrom to recover; everything else is the test's.
type fatalAsPanic struct{ testing.TB }

func (fatalAsPanic) Helper() {}

func (fatalAsPanic) Fatalf(format string, args ...any) {
	panic(deliverFailure(fmt.Sprintf(format, args...)))
}
