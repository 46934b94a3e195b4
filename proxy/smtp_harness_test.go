package proxy_test

// The harness of the in-process SMTP submission tests: a go-smtp server as
// the backend (AUTH PLAIN for the master user with an authzid, or a
// user's own password; the extensions a submission server offers) behind
// a connection-counting forwarder, kanmon's submission listeners in front
// of it, and transcripts driven with conv from harness_test.go.

import (
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Exact lines kanmon's submission front sends.
const (
	smtpGreeting    = "S: 220 ..."
	smtpFailed      = "535 5.7.8 " + auth.FailureText
	smtpUnavailable = "454 4.7.0 Temporary authentication failure"
	smtpAuthOK      = "235 2.7.0 Authentication successful"
	smtpAuthNeeded  = "530 5.7.0 Authentication required"
	smtpEncryption  = "538 5.7.11 Encryption required for requested authentication mechanism"
	smtpTooMany     = "421 4.7.0 Too many errors; closing connection"
	smtpOK          = "250 2.0.0 OK"
)

// The backend's own lines, which only the relay can bring to the client.
const (
	backendSize     = 60 << 20 // SIZE 62914560 in the backend's EHLO
	backendQueued   = "250 2.0.0 OK: queued"
	backendRejected = "554 5.7.1 Rejected by the backend: looks like spam"
	rejectRcpt      = "reject@example.org" // Data fails for this recipient
	// daveTempFail is the backend's AUTH reply for dave (no 2FA).
	daveTempFail = "454 4.7.0 Backend is busy"
)

// smtpMessage is one message the backend accepted.
type smtpMessage struct {
	user, helo, from string
	to               []string
	size             int64
	data             []byte // the first MiB
}

// smtpBackend is the go-smtp server kanmon logs into.
type smtpBackend struct {
	addr string
	// auths counts AUTH exchanges; continuations those without an
	// initial response.
	auths, continuations atomic.Int64
	// dataRead is sent on (if there is room) when Data has read a whole
	// message; while holding is set, Data then waits until hold is
	// closed before it answers.
	dataRead chan struct{}
	holding  atomic.Bool
	hold     chan struct{}

	mu   sync.Mutex
	msgs []smtpMessage
}

// backendPasswords are the backend's own users and passwords; dave's
// login fails temporarily.
var backendPasswords = map[string]string{"alice": alicePW, "carol": carolPW, "dave": davePW, "erin": erinPW}

func startSMTPBackend(t testing.TB) *smtpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &smtpBackend{addr: ln.Addr().String(), dataRead: make(chan struct{}, 1), hold: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpBackendSession{be: be, helo: c.Hostname()}, nil
	}))
	srv.Domain = "backend.test"
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.EnableBINARYMIME = true
	srv.MaxMessageBytes = backendSize
	srv.MaxLineLength = 16 << 10  // erin's AUTH response; go-smtp's default is 2000
	srv.ReadTimeout = time.Minute // a 50 MB DATA under -race
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return be
}

// messages returns what the backend accepted so far.
func (be *smtpBackend) messages() []smtpMessage {
	be.mu.Lock()
	defer be.mu.Unlock()
	return append([]smtpMessage(nil), be.msgs...)
}

// last is the last message accepted, failing the test if there is none.
func (be *smtpBackend) last(t testing.TB) smtpMessage {
	t.Helper()
	msgs := be.messages()
	if len(msgs) == 0 {
		t.Fatal("the backend accepted no message")
	}
	return msgs[len(msgs)-1]
}

// smtpBackendSession is one backend connection.
type smtpBackendSession struct {
	be   *smtpBackend
	helo string
	user string
	cur  smtpMessage
}

func (s *smtpBackendSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpBackendSession) Auth(string) (sasl.Server, error) {
	s.be.auths.Add(1)
	return &countingSASL{be: s.be, Server: sasl.NewPlainServer(func(identity, username, password string) error {
		var err error
		s.user, err = checkBackendLogin(identity, username, password)
		return err
	})}, nil
}

// countingSASL counts PLAIN exchanges that start without a response.
type countingSASL struct {
	sasl.Server
	be      *smtpBackend
	started bool
}

func (c *countingSASL) Next(resp []byte) ([]byte, bool, error) {
	if !c.started && resp == nil {
		c.be.continuations.Add(1)
	}
	c.started = true
	return c.Server.Next(resp)
}

// checkBackendLogin accepts the master acting for a user, or a user with
// an own password and no other authzid.
func checkBackendLogin(authzid, authcid, pw string) (string, error) {
	user := ""
	switch {
	case authcid == masterUser && pw == masterPW && backendPasswords[authzid] != "":
		user = authzid
	case (authzid == "" || authzid == authcid) && pw != "" && backendPasswords[authcid] == pw:
		user = authcid
	default:
		return "", smtp.ErrAuthFailed
	}
	if user == "dave" {
		return "", &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Backend is busy"}
	}
	return user, nil
}

func (s *smtpBackendSession) Reset()        { s.cur = smtpMessage{} }
func (s *smtpBackendSession) Logout() error { return nil }

func (s *smtpBackendSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.cur = smtpMessage{user: s.user, helo: s.helo, from: from}
	return nil
}

func (s *smtpBackendSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.to = append(s.cur.to, to)
	return nil
}

// Data keeps the first MiB and counts the rest, so a 50 MB message costs
// the test no memory.
func (s *smtpBackendSession) Data(r io.Reader) error {
	var head limitedBuffer
	n, err := io.Copy(&head, r)
	if err != nil {
		return err
	}
	select {
	case s.be.dataRead <- struct{}{}:
	default:
	}
	if s.be.holding.Load() {
		<-s.be.hold
	}
	for _, to := range s.cur.to {
		if to == rejectRcpt {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Rejected by the backend: looks like spam"}
		}
	}
	s.cur.size, s.cur.data = n, head.b
	s.be.mu.Lock()
	s.be.msgs = append(s.be.msgs, s.cur)
	s.be.mu.Unlock()
	return nil
}

// limitedBuffer keeps the first MiB written to it and discards the rest.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 1<<20 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// smtpWorld is kanmon's submission listeners in front of the go-smtp
// backend, with alice on 2FA (one passcode) and carol, dave and erin
// without.
type smtpWorld struct {
	k        *kanmontest.Kanmon
	be       *smtpBackend
	fwd      *tcpServer // what kanmon dials; counts connections
	passcode string
}

func newSMTPWorld(t testing.TB, o worldOptions) *smtpWorld {
	t.Helper()
	be := startSMTPBackend(t)
	fwd := startTCPServer(t, forwardTo(be.addr))
	k := kanmonAt(t, protoSMTP, fwd.addr, o)
	return &smtpWorld{k: k, be: be, fwd: fwd, passcode: k.Passcode("alice", app)}
}

// dialSMTP connects to kanmon's plain submission listener and reads the
// greeting.
func dialSMTP(t testing.TB, addr string) *conv {
	t.Helper()
	c := dial(t, addr)
	c.run(smtpGreeting)
	return c
}

// ehlo sends EHLO name and returns the reply's lines without "250-"/"250 ".
func (c *conv) ehlo(name string) []string {
	c.t.Helper()
	c.write("EHLO " + name + "\r\n")
	var lines []string
	for {
		l := c.line()
		if len(l) < 4 || l[:3] != "250" {
			c.t.Fatalf("EHLO reply line %q", l)
		}
		lines = append(lines, l[4:])
		if l[3] == ' ' {
			return lines
		}
	}
}

// smtpLogin says EHLO and logs in with AUTH PLAIN and an initial
// response, and checks the 235.
func (c *conv) smtpLogin(user, secret string) {
	c.t.Helper()
	c.ehlo("client.example.org")
	c.run("C: AUTH PLAIN "+plainIR("", user, secret), "S: "+smtpAuthOK)
}

// smtpSend runs one transaction through the relay and expects the
// backend's replies; the 250 for the message is the backend's.
func (c *conv) smtpSend(from, to, body string) {
	c.t.Helper()
	c.run(
		"C: MAIL FROM:<"+from+">",
		"S: 250 ...",
		"C: RCPT TO:<"+to+">",
		"S: 250 ...",
		"C: DATA",
		"S: 354 ...",
	)
	c.write("Subject: test\r\n\r\n" + body + "\r\n.\r\n")
	c.run("S: " + backendQueued)
}

// expectSMTPSession checks that the session is relayed to the backend as
// user: a message sent now arrives there, from that login.
func expectSMTPSession(t *testing.T, w *smtpWorld, c *conv, user string) {
	t.Helper()
	body := "hello from " + user + " " + time.Now().Format(time.RFC3339Nano)
	c.smtpSend(user+"@example.org", "bob@example.org", body)
	m := w.be.last(t)
	if m.user != user || !strings.Contains(string(m.data), body) {
		t.Errorf("backend got a message from login %q with %q, want %q with %q", m.user, m.data, user, body)
	}
	c.run("C: QUIT", "S: 221 ...", "EOF")
}
