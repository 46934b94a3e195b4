//go:build unix

package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Issue 18, item 4: a password spray from the campus must not slow other
// users' logins at Dovecot. Dovecot 2.3's auth penalty (src/auth/
// auth-penalty.c) is kept by anvil per remote IP: after a failed login
// without "nodelay", every later authentication from that IP, right
// password or master login alike, first waits 2 s << penalty (4, 8, then
// 15 s). Seen from Dovecot, every passthrough login comes from kanmon's
// address unless kanmon forwards the client's.
//
//   - login_trusted_networks alone does not help: since 2.3.0 (commit
//     d080f54d2b, "Don't disable auth penalty for login_trusted_networks")
//     the login processes no longer send "no-penalty", whatever
//     Dovecot's wiki page on the penalty still says.
//   - forward_client_ip (ID x-originating-ip, XCLIENT ADDR) with kanmon in
//     login_trusted_networks keys the penalty on the client's address:
//     other addresses are not slowed, but everyone behind the sprayer's
//     campus NAT address still is.
//   - A passdb that adds "nodelay" for logins arriving from kanmon's own
//     address (allow_real_nets: the connecting address, not the forwarded
//     one) keeps Dovecot from counting them at all; kanmon's lockout and
//     tarpit do that job.
//
// The tests start Dovecot as internal/dovecottest configures it, stop it,
// and start it again from that configuration with the penalty back on: its
// anvil-auth-penalty socket at Dovecot's default, and without the passdb
// that gives every failure "nodelay". auth_failure_delay stays 0: it only
// delays the failing reply itself. Clients connect from loopback
// addresses, all inside trusted_networks (127.0.0.0/8); kanmon reaches
// Dovecot from 127.0.0.1. The spray is 8 wrong passwords for carol at
// once, as a spraying script sends them; then bob (no 2FA either) logs in
// with his right password, and the test times that login.

// kanmonNodelayPassdb is the passdb of README.md ("Setting up the
// backend", "Dovecot") with the test's address of kanmon.
const kanmonNodelayPassdb = `passdb {
  driver = static
  args = noauthenticate nodelay allow_real_nets=127.0.0.1/32
  result_success = continue
}
`

// The parts of internal/dovecottest's configuration that turn the penalty
// off; startPenaltyDovecot takes them out.
const (
	harnessNodelayPassdb = `passdb {
  driver = static
  args = noauthenticate nodelay
  result_success = continue
}
`
	harnessPenaltyOff = `  unix_listener anvil-auth-penalty {
    mode = 0
  }
`
)

const (
	// sprayCount is how many wrong passwords carol gets.
	sprayCount = 8
	// penaltyFast bounds a login nobody slowed: a few milliseconds, tens
	// under the race detector.
	penaltyFast = time.Second
	// penaltySlow is the control's cut-off: a login still unanswered
	// after it is held back. Dovecot's penalty after one counted failure
	// is 4 s.
	penaltySlow = 2 * time.Second
	// penaltyIOTimeout bounds every client exchange; the longest penalty
	// is 15 s.
	penaltyIOTimeout = 30 * time.Second
)

// penaltySetup is one way of running kanmon and Dovecot.
type penaltySetup struct {
	// trusted puts kanmon's address in Dovecot's login_trusted_networks.
	trusted bool
	// forward sets kanmon's forward_client_ip: id for IMAP, xclient for
	// POP3 and submission.
	forward bool
	// nodelay adds kanmonNodelayPassdb.
	nodelay bool
}

// penaltyProto is one protocol's client for these tests.
type penaltyProto struct {
	name string
	// addr is kanmon's implicit-TLS listener.
	addr func(*kanmontest.Kanmon) string
	// greet reads the greeting and sends what comes before the login
	// command (POP3's USER, SMTP's EHLO).
	greet func(c *penaltyConn, user string) error
	// login sends the login command and returns the reply.
	login func(c *penaltyConn, user, secret string) (string, error)
	// ok tells a successful login's reply.
	ok func(reply string) bool
}

var penaltyProtos = []penaltyProto{
	{
		name: config.ProtocolIMAP,
		addr: func(k *kanmontest.Kanmon) string { return k.IMAPS },
		greet: func(c *penaltyConn, _ string) error {
			_, err := c.expect("* OK ")
			return err
		},
		login: func(c *penaltyConn, user, secret string) (string, error) {
			if err := c.send(fmt.Sprintf("a1 LOGIN %s %q", user, secret)); err != nil {
				return "", err
			}
			for {
				l, err := c.line()
				if err != nil {
					return "", err
				}
				if reply, ok := strings.CutPrefix(l, "a1 "); ok {
					return reply, nil
				}
			}
		},
		ok: func(reply string) bool { return strings.HasPrefix(reply, "OK ") },
	},
	{
		name: config.ProtocolPOP3,
		addr: func(k *kanmontest.Kanmon) string { return k.POP3S },
		greet: func(c *penaltyConn, user string) error {
			return c.exchange(c.expect, "+OK", "USER "+user, "+OK")
		},
		login: func(c *penaltyConn, _, secret string) (string, error) {
			if err := c.send("PASS " + secret); err != nil {
				return "", err
			}
			return c.line()
		},
		ok: func(reply string) bool { return strings.HasPrefix(reply, "+OK") },
	},
	{
		name: config.ProtocolSubmission,
		addr: func(k *kanmontest.Kanmon) string { return k.SubmissionS },
		greet: func(c *penaltyConn, _ string) error {
			return c.exchange(c.smtpReply, "220", "EHLO e2e.example.edu", "250")
		},
		login: func(c *penaltyConn, user, secret string) (string, error) {
			if err := c.send("AUTH PLAIN " + plainResponse(user, secret)); err != nil {
				return "", err
			}
			return c.smtpReply("")
		},
		ok: func(reply string) bool { return strings.HasPrefix(reply, "235 ") },
	},
}

// penaltyConn is a line client on kanmon's implicit-TLS listener that
// returns errors instead of failing the test, so that the spray's
// goroutines can use it.
type penaltyConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// dialPenalty connects to kanmon's listener of p from the local address
// from and greets, ready for user's login command. The connection's
// exchanges all end within penaltyIOTimeout.
func dialPenalty(p penaltyProto, k *kanmontest.Kanmon, from, user string) (*penaltyConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.Dial("tcp", p.addr(k))
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(penaltyIOTimeout))
	tc := tls.Client(raw, k.ClientTLS)
	c := &penaltyConn{conn: tc, br: bufio.NewReader(tc)}
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	if err := p.greet(c, user); err != nil {
		raw.Close()
		return nil, fmt.Errorf("%s from %s, before the login: %w", p.name, from, err)
	}
	return c, nil
}

// line reads a line without its CRLF.
func (c *penaltyConn) line() (string, error) {
	l, err := c.br.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// exchange reads the greeting with read (which wants greeting), sends cmd
// and reads its reply (which wants reply).
func (c *penaltyConn) exchange(read func(string) (string, error), greeting, cmd, reply string) error {
	if _, err := read(greeting); err != nil {
		return err
	}
	if err := c.send(cmd); err != nil {
		return err
	}
	_, err := read(reply)
	return err
}

// send writes line and CRLF.
func (c *penaltyConn) send(line string) error {
	_, err := c.conn.Write([]byte(line + "\r\n"))
	return err
}

// expect reads a line and wants it to start with prefix.
func (c *penaltyConn) expect(prefix string) (string, error) {
	l, err := c.line()
	if err == nil && !strings.HasPrefix(l, prefix) {
		err = fmt.Errorf("S: %s (want %q)", l, prefix)
	}
	return l, err
}

// smtpReply reads an SMTP reply, wants its code to be code unless code
// is empty, and returns its last line.
func (c *penaltyConn) smtpReply(code string) (string, error) {
	for {
		l, err := c.line()
		if err != nil {
			return l, err
		}
		if len(l) < 4 || (code != "" && !strings.HasPrefix(l, code)) {
			return l, fmt.Errorf("S: %s (want %s)", l, code)
		}
		if l[3] != '-' {
			return l, nil
		}
	}
}

// sprayCarol sends sprayCount distinct wrong passwords for carol from
// from and waits for every reply. The connections are opened and greeted
// first and the login commands then sent together, so that Dovecot starts
// all of them before it has counted any failure: the spray takes about
// 0.5 s (Dovecot's failure tick), or 4.5 s for one that comes late.
func sprayCarol(t *testing.T, p penaltyProto, k *kanmontest.Kanmon, from string) {
	t.Helper()
	conns := make([]*penaltyConn, sprayCount)
	for i := range conns {
		c, err := dialPenalty(p, k, from, "carol")
		if err != nil {
			t.Fatalf("spray: %v", err)
		}
		defer c.conn.Close()
		conns[i] = c
	}
	replies := make([]string, sprayCount)
	errs := make([]error, sprayCount)
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { replies[i], errs[i] = p.login(c, "carol", fmt.Sprintf("sprayed-guess-%d", i)) })
	}
	wg.Wait()
	t.Logf("%s: %d wrong passwords for carol from %s answered within %v", p.name, sprayCount, from, time.Since(start).Round(time.Millisecond))
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("spray: %v", err)
	}
	for i, r := range replies {
		if p.ok(r) {
			t.Fatalf("spray: wrong password %d logged carol in: %s", i, r)
		}
	}
}

// mustDialPenalty is dialPenalty that fails the test on an error.
func mustDialPenalty(t *testing.T, p penaltyProto, k *kanmontest.Kanmon, from, user string) *penaltyConn {
	t.Helper()
	c, err := dialPenalty(p, k, from, user)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// loginTimed logs user in with secret from from, fails the test unless
// the login succeeds, and returns how long the login command took.
func loginTimed(t *testing.T, p penaltyProto, k *kanmontest.Kanmon, from, user, secret string) time.Duration {
	t.Helper()
	c := mustDialPenalty(t, p, k, from, user)
	defer c.conn.Close()
	start := time.Now()
	reply, err := p.login(c, user, secret)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%s login of %s from %s: %v", p.name, user, from, err)
	}
	if !p.ok(reply) {
		t.Fatalf("%s login of %s from %s: S: %s (want a successful login)", p.name, user, from, reply)
	}
	t.Logf("%s: %s's login from %s took %v", p.name, user, from, took.Round(time.Millisecond))
	return took
}

// startPenaltyWorld starts Dovecot with its auth penalty on, as s says,
// and kanmon in front of it for p only, trusting 127.0.0.0/8, with alice
// on 2FA ("Thunderbird") and bob and carol without.
func startPenaltyWorld(t *testing.T, p penaltyProto, s penaltySetup) *world {
	t.Helper()
	var opts dovecottest.Options
	if s.trusted {
		opts.LoginTrustedNetworks = []string{"127.0.0.1/32"}
	}
	if p.name == config.ProtocolSubmission {
		opts.SubmissionRelay = dovecottest.StartSink(t).Addr
	}
	dc := startPenaltyDovecot(t, opts, s.nodelay)
	kopts := kanmontest.Options{
		TrustedNetworks: []string{"127.0.0.0/8"},
		Listeners:       []string{config.TLSImplicit},
		MasterUser:      masterUser,
		MasterPassword:  masterPassword,
		Passcodes:       map[string][]string{"alice": {"Thunderbird"}},
	}
	switch p.name {
	case config.ProtocolIMAP:
		kopts.IMAPBackend = dc.IMAPAddr
		if s.forward {
			kopts.BackendExtra = `forward_client_ip = "id"`
		}
	case config.ProtocolPOP3:
		kopts.POP3Backend = dc.POP3Addr
		if s.forward {
			kopts.POP3BackendExtra = `forward_client_ip = "xclient"`
		}
	case config.ProtocolSubmission:
		kopts.SubmissionBackend = dc.SubmissionAddr
	}
	if s.forward && p.name == config.ProtocolSubmission {
		kopts.SubmissionBackendExtra = `forward_client_ip = "xclient"`
	}
	k := kanmontest.Start(t, kopts)
	return &world{dovecot: dc, kanmon: k}
}

// startPenaltyDovecot starts a Dovecot as startDovecot does (alice, bob,
// carol, the master user), then restarts it with the auth penalty on: the
// same configuration without what turns the penalty off, and with
// kanmonNodelayPassdb when nodelay is set.
func startPenaltyDovecot(t *testing.T, opts dovecottest.Options, nodelay bool) *dovecottest.Server {
	t.Helper()
	bin, ok := dovecottest.Available()
	dc := startDovecot(t, opts, "alice", "bob", "carol")
	if !ok {
		t.Fatal("dovecottest started a Dovecot it cannot find")
	}
	dc.Stop()
	path := filepath.Join(dc.Dir, "dovecot.conf")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	add := ""
	if nodelay {
		add = kanmonNodelayPassdb
	}
	for _, cut := range []struct{ old, new string }{{harnessNodelayPassdb, add}, {harnessPenaltyOff, ""}} {
		if strings.Count(conf, cut.old) != 1 {
			t.Fatalf("internal/dovecottest's dovecot.conf changed: want one\n%s\nin\n%s", cut.old, conf)
		}
		conf = strings.Replace(conf, cut.old, cut.new, 1)
	}
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(filepath.Join(dc.Dir, "dovecot.stderr"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-F", "-c", path)
	cmd.Dir = dc.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	pgid := cmd.Process.Pid
	// Registered after dovecottest's cleanup, so it runs before that
	// removes the directory.
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if syscall.Kill(-pgid, syscall.SIGKILL) != nil {
				break
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !imapGreets(dc.IMAPAddr) {
		select {
		case <-exited:
			t.Fatalf("Dovecot with the penalty on exited at start:\n%s", dc.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dovecot with the penalty on did not greet at %s within 10 s:\n%s", dc.IMAPAddr, dc.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return dc
}

// imapGreets reports whether an IMAP server at addr greets, with its
// auth process ready.
func imapGreets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	_, _ = c.Write([]byte("z LOGOUT\r\n"))
	return err == nil && strings.HasPrefix(l, "* OK") && !strings.Contains(l, "Waiting for auth")
}

// The settings README.md recommends keep a campus spray from slowing
// anyone else at Dovecot: with the client's address forwarded, a spray
// slows only logins from its own address; with "nodelay" for kanmon's
// logins as well, not even those (the campus NAT), nor the 2FA users'
// master logins.
func TestE2EAuthPenaltyContained(t *testing.T) {
	for _, p := range penaltyProtos {
		t.Run(p.name, func(t *testing.T) {
			t.Run("forwarded, another address", func(t *testing.T) {
				w := startPenaltyWorld(t, p, penaltySetup{trusted: true, forward: true})
				sprayCarol(t, p, w.kanmon, "127.0.0.2")
				if took := loginTimed(t, p, w.kanmon, "127.0.0.3", "bob", bobPassword); took >= penaltyFast {
					t.Errorf("bob's login from 127.0.0.3 after a spray from 127.0.0.2 took %v, want under %v", took, penaltyFast)
				}
			})
			t.Run("forwarded and nodelay for kanmon, the same address", func(t *testing.T) {
				w := startPenaltyWorld(t, p, penaltySetup{trusted: true, forward: true, nodelay: true})
				sprayCarol(t, p, w.kanmon, "127.0.0.2")
				if took := loginTimed(t, p, w.kanmon, "127.0.0.2", "bob", bobPassword); took >= penaltyFast {
					t.Errorf("bob's login from the sprayer's address took %v, want under %v", took, penaltyFast)
				}
				if took := loginTimed(t, p, w.kanmon, "127.0.0.2", "alice", w.kanmon.Passcode("alice", "Thunderbird")); took >= penaltyFast {
					t.Errorf("alice's passcode login (kanmon's master login) from the sprayer's address took %v, want under %v", took, penaltyFast)
				}
				// Dovecot was told the client's address, and counted
				// nothing against it.
				wantDovecotLogin(t, w, p.name, "bob", "127.0.0.2")
			})
		})
	}
}

// The control: without those settings the spray holds bob's right
// password back by Dovecot's penalty (4 s or more here), and kanmon's
// address in login_trusted_networks alone changes nothing in Dovecot 2.3.
// Forwarding without "nodelay" still holds back everyone at the sprayer's
// address. A login that has no answer after penaltySlow counts as held
// back; the test does not wait out the penalty. The subtests all run in
// parallel: they assert only that a login is slow.
func TestE2EAuthPenaltyControl(t *testing.T) {
	for _, p := range penaltyProtos {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name  string
				setup penaltySetup
				from  string
			}{
				{"dovecot defaults", penaltySetup{}, "127.0.0.3"},
				{"login_trusted_networks alone", penaltySetup{trusted: true}, "127.0.0.3"},
				{"forwarded, the same address", penaltySetup{trusted: true, forward: true}, "127.0.0.2"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					w := startPenaltyWorld(t, p, tc.setup)
					sprayCarol(t, p, w.kanmon, "127.0.0.2")
					wantHeldBack(t, p, w.kanmon, tc.from, "bob", bobPassword)
				})
			}
		})
	}
}

// wantHeldBack starts user's login from from and fails the test unless
// it is still unanswered after penaltySlow.
func wantHeldBack(t *testing.T, p penaltyProto, k *kanmontest.Kanmon, from, user, secret string) {
	t.Helper()
	c := mustDialPenalty(t, p, k, from, user)
	defer c.conn.Close()
	start := time.Now()
	_ = c.conn.SetReadDeadline(start.Add(penaltySlow))
	reply, err := p.login(c, user, secret)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Logf("%s: %s's login from %s: no answer after %v", p.name, user, from, penaltySlow)
		return
	}
	t.Errorf("%s: %s's login from %s after a spray from 127.0.0.2: S: %q, %v after %v; want no answer within %v "+
		"(Dovecot's penalty): the control does not reproduce the slowdown", p.name, user, from, reply, err, time.Since(start), penaltySlow)
}
