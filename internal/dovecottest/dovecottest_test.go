//go:build unix

package dovecottest

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

const (
	master   = "kanmon"
	masterPW = "master-pw"
)

// start starts a server with alice and bob and the master user.
func start(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Users = append(opts.Users, User{"alice", "alice-pw"}, User{"bob", "bob-pw"})
	if opts.MasterUser == "" {
		opts.MasterUser, opts.MasterPassword = master, masterPW
	}
	return Start(t, opts)
}

func message(subject string) []byte {
	return []byte("From: carol@example.com\r\nTo: alice@example.com\r\nSubject: " + subject +
		"\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\nMessage-ID: <" + subject + "@example.com>\r\n\r\nHello, " + subject + ".\r\n")
}

func dialIMAP(t *testing.T, addr string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// subjects selects INBOX and returns the subjects of all messages.
func subjects(t *testing.T, c *imapclient.Client) []string {
	t.Helper()
	mbox, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	if mbox.NumMessages == 0 {
		return nil
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1, mbox.NumMessages), &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil {
		t.Fatalf("FETCH: %v", err)
	}
	var subs []string
	for _, m := range msgs {
		subs = append(subs, m.Envelope.Subject)
	}
	return subs
}

func TestIMAPLoginAndDeliver(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	s.Deliver(t, "alice", message("first"))
	c := dialIMAP(t, s.IMAPAddr)
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	if got := subjects(t, c); len(got) != 1 || got[0] != "first" {
		t.Fatalf("subjects = %q, want [first]", got)
	}
	// A message delivered while the session is open shows up too.
	s.Deliver(t, "ALICE", message("second"))
	if got := subjects(t, c); len(got) != 2 || got[1] != "second" {
		t.Fatalf("subjects = %q, want [first second]", got)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("LOGOUT: %v", err)
	}
	logClean(t, s)
}

// waitLog waits up to 5 s for Dovecot's log process to write substr.
func waitLog(t *testing.T, s *Server, substr string) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, "the Dovecot log", func() error {
		if !strings.Contains(s.Log(), substr) {
			return fmt.Errorf("%q is not in it", substr)
		}
		return nil
	})
}

// logClean fails the test if Dovecot logged a warning or an error, as it does
// about a doubtful configuration.
func logClean(t *testing.T, s *Server) {
	t.Helper()
	for _, l := range strings.Split(s.Log(), "\n") {
		if strings.Contains(l, "Warning:") || strings.Contains(l, "Error:") || strings.Contains(l, "Fatal:") {
			t.Errorf("Dovecot log: %s", l)
		}
	}
}

func TestIMAPWrongPasswordIsFastAndRepeatable(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	begin := time.Now()
	for _, cred := range [][2]string{
		{"alice", "wrong"}, {"alice", "wrong"}, {"alice", "bob-pw"}, {"nosuch", "alice-pw"},
		{"alice", ""}, {"alice", "alice-pw "}, {"alice", "Alice-pw"}, {"bob", "wrong"},
	} {
		c := dialIMAP(t, s.IMAPAddr)
		if err := c.Login(cred[0], cred[1]).Wait(); err == nil {
			t.Errorf("LOGIN %q %q succeeded", cred[0], cred[1])
		}
		c.Close()
	}
	// nodelay and no anvil penalty: Dovecot's defaults would take 2 s
	// for the first failure and up to 15 s for later ones; without
	// nodelay each failure would still take 0.5 s.
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("8 failed logins took %v; the auth delay/penalty is not off", d)
	}
	c := dialIMAP(t, s.IMAPAddr)
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatalf("LOGIN after failures: %v", err)
	}
	waitLog(t, s, "Password mismatch")
}

func TestIMAPMasterUser(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	s.Deliver(t, "bob", message("for-bob"))

	c := dialIMAP(t, s.IMAPAddr)
	if err := c.Authenticate(sasl.NewPlainClient("bob", master, masterPW)); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN as bob via master: %v", err)
	}
	if got := subjects(t, c); len(got) != 1 || got[0] != "for-bob" {
		t.Fatalf("master login sees %q, want bob's [for-bob]", got)
	}

	for _, tc := range []struct{ authz, authc, pw string }{
		{"bob", master, "wrong"},          // wrong master password
		{"nobody-here", master, masterPW}, // pass = yes: the user must exist
		{"bob", "alice", "alice-pw"},      // an ordinary user is no master
	} {
		c := dialIMAP(t, s.IMAPAddr)
		if err := c.Authenticate(sasl.NewPlainClient(tc.authz, tc.authc, tc.pw)); err == nil {
			t.Errorf("AUTHENTICATE PLAIN %q/%q/%q succeeded", tc.authz, tc.authc, tc.pw)
		}
	}
}

// With UsernameFormat "%Ln" Dovecot strips the domain, as Zimbra does:
// "ALICE@anything.example" is alice, with alice's password, and the master
// user logs in as her under that spelling too. By default (%Lu) that name
// is an unknown user.
func TestUsernameFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		format string
		ok     bool
	}{{"", false}, {"%Ln", true}} {
		s := start(t, Options{UsernameFormat: tc.format})
		c := dialIMAP(t, s.IMAPAddr)
		err := c.Login("ALICE@anything.example", "alice-pw").Wait()
		if (err == nil) != tc.ok {
			t.Errorf("format %q: LOGIN ALICE@anything.example: %v, want success %v", tc.format, err, tc.ok)
		}
		c = dialIMAP(t, s.IMAPAddr)
		err = c.Authenticate(sasl.NewPlainClient("bob@anything.example", master, masterPW))
		if (err == nil) != tc.ok {
			t.Errorf("format %q: master login as bob@anything.example: %v, want success %v", tc.format, err, tc.ok)
		}
		if tc.ok {
			waitLog(t, s, "Login: user=<alice>")
		} else {
			waitLog(t, s, "passwd-file(alice@anything.example,")
		}
		logClean(t, s)
	}
}

// transcript is a raw line-based client for POP3 and SMTP.
type transcript struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *transcript {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &transcript{t, c, bufio.NewReader(c)}
}

func (x *transcript) line() string {
	x.t.Helper()
	l, err := x.r.ReadString('\n')
	if err != nil {
		x.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// cmd sends a command and returns the first response line, which must start
// with want.
func (x *transcript) cmd(cmd, want string) string {
	x.t.Helper()
	if _, err := fmt.Fprintf(x.c, "%s\r\n", cmd); err != nil {
		x.t.Fatalf("write %q: %v", cmd, err)
	}
	l := x.line()
	if !strings.HasPrefix(l, want) {
		x.t.Fatalf("%q: got %q, want %q...", cmd, l, want)
	}
	return l
}

func TestPOP3(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	s.Deliver(t, "alice", message("pop-one"))
	s.Deliver(t, "alice", message("pop-two"))

	x := dialRaw(t, s.POP3Addr)
	if l := x.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("greeting %q", l)
	}
	x.cmd("USER alice", "+OK")
	x.cmd("PASS alice-pw", "+OK")
	x.cmd("LIST", "+OK")
	var n int
	for l := x.line(); l != "."; l = x.line() {
		n++
	}
	if n != 2 {
		t.Fatalf("LIST shows %d messages, want 2", n)
	}
	x.cmd("QUIT", "+OK")

	// The master user works for POP3 too (AUTH PLAIN with an initial
	// response, RFC 5034), and a wrong password is refused.
	y := dialRaw(t, s.POP3Addr)
	y.line()
	resp := base64.StdEncoding.EncodeToString([]byte("alice\x00" + master + "\x00" + masterPW))
	y.cmd("AUTH PLAIN "+resp, "+OK")
	y.cmd("STAT", "+OK 2 ")
	y.cmd("QUIT", "+OK")

	z := dialRaw(t, s.POP3Addr)
	z.line()
	z.cmd("USER alice", "+OK")
	z.cmd("PASS nope", "-ERR")
}

func TestSubmissionRelays(t *testing.T) {
	t.Parallel()
	sink := StartSink(t)
	s := start(t, Options{SubmissionRelay: sink.Addr})

	x := dialRaw(t, s.SubmissionAddr)
	if l := x.line(); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting %q", l)
	}
	x.cmd("EHLO client.localhost", "250")
	for l := x.line(); ; l = x.line() {
		if strings.HasPrefix(l, "250 ") {
			break
		}
	}
	x.cmd("QUIT", "221")

	c, err := smtp.Dial(s.SubmissionAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("alice", master, masterPW)); err != nil {
		t.Fatalf("AUTH PLAIN via master: %v", err)
	}
	msg := message("submitted")
	if err := c.SendMail("alice@example.com", []string{"dave@example.net"}, strings.NewReader(string(msg))); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.Quit()
	got := sink.Wait(t, 1, 10*time.Second)
	if got[0].From != "alice@example.com" || len(got[0].To) != 1 || got[0].To[0] != "dave@example.net" ||
		!strings.Contains(string(got[0].Data), "Subject: submitted") {
		t.Fatalf("sink got %+v", got[0])
	}
	logClean(t, s)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	sink := StartSink(t)
	s := start(t, Options{TLS: true, SubmissionRelay: sink.Addr})
	if s.IMAPSAddr == "" || s.POP3SAddr == "" || s.SubmissionsAddr == "" {
		t.Fatalf("TLS addresses missing: %+v", s)
	}
	c, err := imapclient.DialTLS(s.IMAPSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
	if err != nil {
		t.Fatalf("IMAPS: %v", err)
	}
	defer c.Close()
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatalf("IMAPS LOGIN: %v", err)
	}
	c2, err := imapclient.DialStartTLS(s.IMAPAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
	if err != nil {
		t.Fatalf("IMAP STARTTLS: %v", err)
	}
	defer c2.Close()
	if err := c2.Authenticate(sasl.NewPlainClient("alice", master, masterPW)); err != nil {
		t.Fatalf("STARTTLS master AUTHENTICATE: %v", err)
	}
	sc, err := smtp.DialTLS(s.SubmissionsAddr, s.TLSConfig())
	if err != nil {
		t.Fatalf("submissions: %v", err)
	}
	defer sc.Close()
	if err := sc.Hello("client.localhost"); err != nil {
		t.Fatalf("submissions EHLO: %v", err)
	}
	logClean(t, s)
}

func TestTrustedNetworksForwardClientIP(t *testing.T) {
	t.Parallel()
	s := start(t, Options{LoginTrustedNetworks: []string{"127.0.0.0/8"}})
	x := dialRaw(t, s.IMAPAddr)
	x.line()
	x.cmd(`a ID ("x-originating-ip" "203.0.113.7" "x-originating-port" "40000")`, "* ID")
	x.line() // a OK
	x.cmd("b LOGIN alice alice-pw", "b OK")
	x.cmd("c LOGOUT", "* BYE")
	x.line()
	waitLog(t, s, "rip=203.0.113.7")
}

func TestPOP3XCLIENTForwardClientIP(t *testing.T) {
	t.Parallel()
	s := start(t, Options{LoginTrustedNetworks: []string{"127.0.0.0/8"}})
	x := dialRaw(t, s.POP3Addr)
	x.line()
	x.cmd("XCLIENT ADDR=203.0.113.8 PORT=40001", "+OK")
	x.cmd("USER alice", "+OK")
	x.cmd("PASS alice-pw", "+OK")
	x.cmd("QUIT", "+OK")
	waitLog(t, s, "rip=203.0.113.8")
}

func TestHAProxyListeners(t *testing.T) {
	t.Parallel()
	s := start(t, Options{HAProxy: true})
	if s.IMAPHAProxyAddr == "" || s.POP3HAProxyAddr == "" {
		t.Fatalf("HAProxy listeners: %q %q", s.IMAPHAProxyAddr, s.POP3HAProxyAddr)
	}
	x := dialRaw(t, s.IMAPHAProxyAddr)
	fmt.Fprintf(x.c, "PROXY TCP4 203.0.113.9 127.0.0.1 40002 143\r\n")
	x.line()
	x.cmd("a LOGIN alice alice-pw", "a OK")
	x.cmd("b LOGOUT", "* BYE")
	waitLog(t, s, "rip=203.0.113.9")
	p := dialRaw(t, s.POP3HAProxyAddr)
	fmt.Fprintf(p.c, "PROXY TCP4 203.0.113.10 127.0.0.1 40003 110\r\n")
	p.line()
	p.cmd("USER alice", "+OK")
	p.cmd("PASS alice-pw", "+OK")
	p.cmd("QUIT", "+OK")
	waitLog(t, s, "rip=203.0.113.10")
	// The plain listeners stay as they were.
	c := dialIMAP(t, s.IMAPAddr)
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatalf("plain listener: %v", err)
	}
	logClean(t, s)
}

func TestMaxUserConnections(t *testing.T) {
	t.Parallel()
	s := start(t, Options{MaxUserConnections: 2})
	for i := 0; i < 2; i++ {
		c := dialIMAP(t, s.IMAPAddr)
		if err := c.Login("alice", "alice-pw").Wait(); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	c := dialIMAP(t, s.IMAPAddr)
	if err := c.Login("alice", "alice-pw").Wait(); err == nil {
		t.Fatal("third connection of alice from 127.0.0.1 was allowed with MaxUserConnections = 2")
	}
}

func TestDefaultAllowsManyConnections(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	// Dovecot's own default, mail_max_userip_connections = 10, would
	// refuse some of these.
	const n = 15
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := imapclient.DialInsecure(s.IMAPAddr, nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := c.Login("bob", "bob-pw").Wait(); err != nil {
				errs <- err
				return
			}
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestStopLeavesNoProcesses(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	c := dialIMAP(t, s.IMAPAddr)
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	pgid := s.master.Process().Pid()
	if !testenv.GroupAlive(pgid) {
		t.Fatal("no Dovecot process group while running")
	}
	s.Stop()
	s.Stop() // idempotent
	if testenv.GroupAlive(pgid) {
		t.Fatalf("processes of group %d survived Stop", pgid)
	}
	if _, err := net.DialTimeout("tcp", s.IMAPAddr, time.Second); err == nil {
		t.Fatal("IMAP port still answers after Stop")
	}
}

func TestParallelInstances(t *testing.T) {
	t.Parallel()
	for i := 0; i < 3; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			s := Start(t, Options{Users: []User{{"user", fmt.Sprint("pw", i)}}})
			s.Deliver(t, "user", message(fmt.Sprint("m", i)))
			c := dialIMAP(t, s.IMAPAddr)
			if err := c.Login("user", fmt.Sprint("pw", i)).Wait(); err != nil {
				t.Fatal(err)
			}
			if got := subjects(t, c); len(got) != 1 || got[0] != fmt.Sprint("m", i) {
				t.Fatalf("instance %d sees %q", i, got)
			}
		})
	}
}

// TestRetryOnTakenPort takes the chosen IMAP port away before the first
// launch; Start must notice "Address already in use" and try new ports. It is
// not parallel because it sets a package hook.
func TestRetryOnTakenPort(t *testing.T) {
	var squat net.Listener
	testHookPortsPicked = func(s *Server) {
		if squat == nil {
			l, err := net.Listen("tcp", s.IMAPAddr)
			if err != nil {
				t.Errorf("squatting %s: %v", s.IMAPAddr, err)
				return
			}
			squat = l
		}
	}
	defer func() { testHookPortsPicked = nil }()
	s := start(t, Options{})
	if squat == nil {
		t.Fatal("hook did not run")
	}
	defer squat.Close()
	if s.attempts != 2 {
		t.Errorf("Start took %d launches, want 2", s.attempts)
	}
	c := dialIMAP(t, s.IMAPAddr)
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{
		{Users: []User{{"a:b", "pw"}}},
		{Users: []User{{"a", ""}}},
		{Users: []User{{"a", "p:w"}}},
		{Users: []User{{"a", "pw"}, {"A", "pw2"}}},
		{MasterUser: "m"},
		{SubmissionRelay: "nohostport"},
		{LoginTrustedNetworks: []string{"not-a-net"}},
		{UsernameFormat: "%Ln\nauth_debug = yes"},
		{UsernameFormat: "%Ln %Lu"},
	} {
		if err := validate(&o); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", o)
		}
	}
	ok := Options{Users: []User{{"alice@example.com", "p w{x}"}}, MasterUser: "m", MasterPassword: "p",
		SubmissionRelay: "127.0.0.1:25", LoginTrustedNetworks: []string{"127.0.0.0/8", "::1"}, UsernameFormat: "%Ln"}
	if err := validate(&ok); err != nil {
		t.Errorf("validate(%+v) = %v", ok, err)
	}
}

func TestMissingDovecotSkipsUnlessCI(t *testing.T) {
	testenv.CheckUnavailable(t, dovecot)
}
