package proxy_test

// The harness of the in-process IMAP tests: a memimap backend behind a
// connection-counting forwarder, kanmon in front of it (kanmontest), and
// a transcript driver that reads like a protocol log:
//
//	c.run(
//		"C: a1 LOGIN alice "+pc,
//		"S: a1 OK [CAPABILITY ...",   // trailing "..." = prefix match
//		"S*: a2 OK [READ-WRITE] ...", // skip untagged lines first
//	)

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/memimap"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// Credentials of the test world. The secrets are distinctive so that a
// leak into the log is easy to spot.
const (
	masterUser = "kanmon-master"
	masterPW   = "master-pw-Zq81"
	alicePW    = "alice-account-pw-7fK2" // alice has 2FA: refused
	carolPW    = "carol-own-pw-Lx44"     // carol has no 2FA: passthrough
	app        = "Thunderbird"
)

// Exact lines kanmon sends.
const (
	capsAuth      = "IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN AUTH=LOGIN"
	capsBeforeTLS = "IMAP4rev1 SASL-IR ID LITERAL+ STARTTLS LOGINDISABLED"
	failedReply   = "NO [AUTHENTICATIONFAILED] " + auth.FailureText
	unavailReply  = "NO [UNAVAILABLE] ..."
)

// ioTimeout bounds every read and write of a test: a hang fails fast.
const ioTimeout = 5 * time.Second

// world is kanmon in front of memimap, with alice (2FA, one passcode) and
// carol (no 2FA) as memimap users.
type world struct {
	k        *kanmontest.Kanmon
	mem      *memimap.Server
	backend  *tcpServer // the forwarder kanmon dials; counts connections
	passcode string     // alice's Thunderbird passcode, 16 letters
}

// worldOptions adjust newWorld.
type worldOptions struct {
	trusted      []string // nil: 127.0.0.1/32
	masterPW     string   // kanmon's master password; "" = the right one
	extra        string   // top-level config keys
	backendExtra string   // keys inside [backend.imap]
	listen       string   // keys inside every [[listener]]
}

func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	mem, memAddr := kanmontest.StartMemIMAP(t, masterUser, masterPW, map[string]string{"alice": alicePW, "carol": carolPW})
	fwd := startTCPServer(t, forwardTo(memAddr))
	k := kanmonAt(t, protoIMAP, fwd.addr, o)
	return &world{k: k, mem: mem, backend: fwd, passcode: k.Passcode("alice", app)}
}

// kanmonAt starts kanmon with proto's backend at addr, alice on 2FA with
// a passcode, and the master credentials (o.masterPW, else the right
// ones).
func kanmonAt(t testing.TB, proto, addr string, o worldOptions) *kanmontest.Kanmon {
	t.Helper()
	return kanmonFor(t, proto, addr, kanmontest.Options{
		MasterPassword:  o.masterPW,
		TrustedNetworks: o.trusted,
		Extra:           o.extra,
		BackendExtra:    o.backendExtra,
		ListenerExtra:   o.listen,
	})
}

// tcpServer is a loopback listener that runs handle on every connection
// in its own goroutine and counts them. Cleanup closes the listener and
// every connection.
type tcpServer struct {
	addr    string
	accepts atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
}

func startTCPServer(t testing.TB, handle func(net.Conn)) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	return s
}

// forwardTo relays a connection to target, byte for byte.
func forwardTo(target string) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(up, c)
			up.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		_, _ = io.Copy(c, up)
		c.Close()
		<-done
	}
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t testing.TB) string {
	// Port 1 (tcpmux) is below the ephemeral range, so no listener of a
	// test can take it, as one could take a free port closed again.
	const addr = "127.0.0.1:1"
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("something listens on %s; the tests need it refused", addr)
	}
	return addr
}

// conv is one client connection driven as a transcript.
type conv struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// dial connects in clear text.
func dial(t testing.TB, addr string) *conv {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return newConv(t, conn)
}

// dialTLS connects with implicit TLS.
func dialTLS(t testing.TB, addr string, cfg *tls.Config) *conv {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return newConv(t, conn)
}

func newConv(t testing.TB, conn net.Conn) *conv {
	t.Cleanup(func() { conn.Close() })
	return &conv{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// startTLS runs the client side of a TLS handshake on the connection, as
// after "OK Begin TLS negotiation". Bytes still buffered are an error:
// the server must not send any.
func (c *conv) startTLS(cfg *tls.Config) {
	c.t.Helper()
	if n := c.br.Buffered(); n > 0 {
		c.t.Fatalf("server sent %d bytes after its STARTTLS reply", n)
	}
	tc := tls.Client(c.conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("STARTTLS handshake: %v", err)
	}
	c.conn = tc
	c.br = bufio.NewReader(tc)
}

// write sends raw bytes in one write.
func (c *conv) write(raw string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.conn, raw); err != nil {
		c.t.Fatalf("write %.60q: %v", raw, err)
	}
}

// line reads one line without its CRLF.
func (c *conv) line() string {
	c.t.Helper()
	l, err := c.readLine()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return l
}

func (c *conv) readLine() (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := c.br.ReadString('\n')
	if err != nil {
		return l, err
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line without CRLF: %q", l)
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

// run plays a transcript. Steps:
//
//	"C: text"  send text and CRLF
//	"S: text"  the next line is text; a trailing "..." makes it a prefix
//	"S*: text" as S:, after skipping untagged ("* ...") lines
//	"EOF"      the server closed the connection
func (c *conv) run(steps ...string) {
	c.t.Helper()
	for i, step := range steps {
		switch {
		case strings.HasPrefix(step, "C: "):
			c.write(step[3:] + "\r\n")
		case strings.HasPrefix(step, "S: "):
			c.expect(i, step[3:], false)
		case strings.HasPrefix(step, "S*: "):
			c.expect(i, step[4:], true)
		case step == "EOF":
			c.expectEOF()
		default:
			c.t.Fatalf("bad transcript step %d: %q", i, step)
		}
	}
}

// expect reads a line and matches it against want (a prefix if it ends
// in "..."). It returns the line.
func (c *conv) expect(step int, want string, skipUntagged bool) string {
	c.t.Helper()
	for {
		got := c.line()
		if skipUntagged && strings.HasPrefix(got, "* ") {
			continue
		}
		if !lineMatches(got, want) {
			c.t.Fatalf("step %d:\n got S: %s\nwant S: %s", step, got, want)
		}
		return got
	}
}

func lineMatches(got, want string) bool {
	if p, ok := strings.CutSuffix(want, "..."); ok {
		return strings.HasPrefix(got, p)
	}
	return got == want
}

// expectEOF checks that the server closes the connection without sending
// anything more.
func (c *conv) expectEOF() {
	c.t.Helper()
	l, err := c.readLine()
	switch {
	case err == nil:
		c.t.Fatalf("want EOF, got line %q", l)
	case errors.Is(err, io.EOF), isReset(err):
		if l != "" {
			c.t.Fatalf("want EOF, got partial line %q", l)
		}
	default:
		c.t.Fatalf("want EOF, got %v", err)
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// afterTag returns "a1 NO text" into the tag and what follows it.
func afterTag(line string) string {
	_, rest, _ := strings.Cut(line, " ")
	return rest
}

// b64 is standard base64, as SASL uses.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// plainIR is a SASL PLAIN response.
func plainIR(authzid, user, secret string) string {
	return b64(authzid + "\x00" + user + "\x00" + secret)
}

// noLeak fails if the log holds any of the secrets.
func noLeak(t *testing.T, log string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(log, s) {
			t.Errorf("kanmon log contains the secret %q", s)
		}
	}
}

// loginFailure is a backend that misbehaves during kanmon's login, told as
// a backendScript, and how Login must classify it.
type loginFailure struct {
	name  string
	mode  string   // the backend's TLS mode
	steps []string // backendScript steps
	// authFailed is a refusal of the credentials (the user's own
	// password, on passthrough), not a temporary failure.
	authFailed bool
	detail     string // in the error, for the log
	refusal    string // the backend's line passed on to the client
}

// backendLoginFunc runs Backend.Login for one protocol (backendLogin,
// submissionLogin).
type backendLoginFunc func(t *testing.T, b *backend.Backend, cred backend.Credentials) (*backend.Login, *backend.LoginError)

// wantLoginFailures runs each case against a scripted backend through
// login, and one backend that never answers, which must fail at the
// backend timeout.
func wantLoginFailures(t *testing.T, login backendLoginFunc, clientTLS *tls.Config, cases []loginFailure) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := startTCPServer(t, backendScript(t, nil, tc.steps...))
			_, le := login(t, &backend.Backend{Address: fake.addr, TLSMode: tc.mode, TLSConfig: clientTLS}, masterCred)
			if le == nil {
				t.Fatal("login succeeded")
			}
			if le.AuthFailed != tc.authFailed || !strings.Contains(le.Error(), tc.detail) {
				t.Errorf("got AuthFailed %v, %q; want %v, %q", le.AuthFailed, le.Error(), tc.authFailed, tc.detail)
			}
			if le.ClientLine != tc.refusal {
				t.Errorf("client line %q, want %q", le.ClientLine, tc.refusal)
			}
		})
	}
	t.Run("never answers", func(t *testing.T) {
		silent := startTCPServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
		start := time.Now()
		_, le := login(t, &backend.Backend{Address: silent.addr, Timeout: 300 * time.Millisecond}, masterCred)
		if le == nil || le.AuthFailed || !strings.Contains(le.Error(), "reading backend greeting") {
			t.Errorf("got %v", le)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("failed after %v, want about the 300ms timeout", d)
		}
	})
}

// backendCert is a self-signed certificate for a fake backend on
// 127.0.0.1, and a client config that trusts it.
func backendCert(t *testing.T) (*selfsigned.Cert, *tls.Config) {
	t.Helper()
	cert, err := selfsigned.New("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return cert, &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1"}
}

// loginSuccess is a backend login kanmon must make, told as a
// backendScript ("TLS" first for implicit TLS), and what it must hand
// over: the bytes the backend sent past its OK.
type loginSuccess struct {
	name    string
	mode    string // the backend's TLS mode
	steps   []string
	cred    backend.Credentials
	pending string
}

// wantLogins runs each case against a scripted backend through login; a
// TLS mode other than none must leave a TLS connection. It returns the
// logins, by case name, for checks of their own.
func wantLogins(t *testing.T, login backendLoginFunc, cert *selfsigned.Cert, clientTLS *tls.Config, cases []loginSuccess) map[string]*backend.Login {
	t.Helper()
	out := map[string]*backend.Login{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := startTCPServer(t, backendScript(t, &cert.TLS, tc.steps...))
			l, le := login(t, &backend.Backend{Address: fake.addr, TLSMode: tc.mode, TLSConfig: clientTLS}, tc.cred)
			if le != nil {
				t.Fatal(le)
			}
			if _, isTLS := l.Conn.(*tls.Conn); isTLS != (tc.mode != "none" && tc.mode != "") || string(l.Pending) != tc.pending {
				t.Errorf("endpoint: TLS %v, pending %q; want TLS %v, pending %q", isTLS, l.Pending, tc.mode != "none", tc.pending)
			}
			out[tc.name] = l
		})
	}
	return out
}
