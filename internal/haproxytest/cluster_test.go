//go:build linux

package haproxytest

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/proxyproto"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// The test's addresses. Linux routes all of 127.0.0.0/8 to the loopback
// interface, so each node has an address of its own, and the client one
// that neither HAProxy nor a node uses.
const (
	node1Host  = "127.0.0.11"
	node2Host  = "127.0.0.12"
	clientHost = "127.0.0.5"
)

// waitLimit bounds every wait for HAProxy's health checks: with checks
// every 500 ms (ContribOptions' default), a state change takes about 1.5 s.
const waitLimit = 10 * time.Second

// cluster is HAProxy on the contrib configuration in front of two node
// stand-ins.
type cluster struct {
	hap          *Server
	node1, node2 *node
	rec          *recorder
	tls          *tls.Config // the clients'
}

func startCluster(t *testing.T) *cluster {
	if _, ok := binary(t); !ok {
		return nil // skipped
	}
	cert, err := selfsigned.New("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12}
	// Both nodes listen on one port per service, each on its own address.
	ports := map[string]int{}
	ls1, ls2 := map[string]net.Listener{}, map[string]net.Listener{}
	for _, svc := range Services {
		for attempt := 1; ; attempt++ {
			p, err := FreePort(node1Host, node2Host)
			if err != nil {
				t.Fatal(err)
			}
			l1, err := net.Listen("tcp", net.JoinHostPort(node1Host, strconv.Itoa(p)))
			if err == nil {
				l2, err2 := net.Listen("tcp", net.JoinHostPort(node2Host, strconv.Itoa(p)))
				if err2 == nil {
					ports[svc], ls1[svc], ls2[svc] = p, l1, l2
					break
				}
				l1.Close()
				err = err2
			}
			if attempt == 5 { // taken each time between FreePort and Listen
				t.Fatal(err)
			}
		}
	}
	rec := &recorder{}
	cl := &cluster{rec: rec, tls: &tls.Config{RootCAs: cert.Pool, ServerName: "localhost"}}
	cl.node1 = newNode(t, "node1", node1Host, ls1, serverTLS, rec)
	cl.node2 = newNode(t, "node2", node2Host, ls2, serverTLS, rec)
	start := time.Now()
	cl.hap = Start(t, ContribOptions(t, Contrib{Nodes: []string{node1Host, node2Host}, Ports: ports}))
	took := cl.hap.WaitStatus(t, waitLimit, ContribStatus("UP", 2, Services...))
	t.Logf("HAProxy started, and its checks of all %d servers passed, in %v (of which waiting for UP %v)",
		2*len(Services), time.Since(start).Round(time.Millisecond), took.Round(time.Millisecond))
	t.Cleanup(func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, e := range rec.errs {
			t.Errorf("node stand-in: %s", e)
		}
	})
	return cl
}

// dial connects to the frontend of service from 127.0.0.5, with TLS for
// the implicit-TLS services.
func (cl *cluster) dial(t *testing.T, service string) (net.Conn, netip.AddrPort) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientHost)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", cl.hap.Addr(ListenVar(service)))
	if err != nil {
		t.Fatalf("dial %s: %v", service, err)
	}
	local := proxyproto.AddrPort(c.LocalAddr())
	if implicitTLS[service] {
		tc := tls.Client(c, cl.tls)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			t.Fatalf("%s: TLS through HAProxy: %v", service, err)
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	return c, local
}

// session is one client connection through HAProxy.
type session struct {
	conn   net.Conn
	r      *bufio.Reader
	local  netip.AddrPort // the client's address, which the header must name
	node   string         // the node that greeted
	header proxyproto.Header
}

// connect opens a session to service through HAProxy, reads the greeting,
// and checks the PROXY header the node got: the client's address as the
// source, HAProxy's frontend as the destination.
func (cl *cluster) connect(t *testing.T, service string) *session {
	t.Helper()
	c, local := cl.dial(t, service)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	s := &session{conn: c, r: bufio.NewReader(c), local: local}
	greeting, err := s.r.ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("%s: no greeting through HAProxy: %v", service, err)
	}
	c.SetReadDeadline(time.Time{})
	for _, n := range []string{"node1", "node2"} {
		if strings.Contains(greeting, n) {
			s.node = n
		}
	}
	if s.node == "" {
		c.Close()
		t.Fatalf("%s: greeting %q names no node", service, greeting)
	}
	// The header must name the client (127.0.0.5:port) as the source and
	// HAProxy's frontend as the destination: client fails the test when
	// no node got such a header.
	front := netip.MustParseAddrPort(cl.hap.Addr(ListenVar(service)))
	if local.Addr() != netip.MustParseAddr(clientHost) {
		t.Fatalf("the client's address is %v, want %s", local, clientHost)
	}
	a := cl.rec.client(t, local, front)
	s.header = a.header
	if a.node != s.node || a.service != service {
		t.Errorf("%s: the header of %v came to %s %s, but %s greeted", service, local, a.node, a.service, s.node)
	}
	if a.header.Version != 2 {
		t.Errorf("%s: PROXY header version %d, want 2 (send-proxy-v2)", service, a.header.Version)
	}
	if a.remote.Addr() == netip.MustParseAddr(clientHost) {
		t.Errorf("%s: the node's TCP peer is the client %v itself, not HAProxy", service, a.remote)
	}
	return s
}

// logout ends the session as a client would and waits for the close.
func (s *session) logout(t *testing.T, service string) {
	t.Helper()
	defer s.conn.Close()
	cmd := map[string]string{"imap": "A1 LOGOUT", "pop3": "QUIT", "smtp": "QUIT"}[dialect(service)]
	s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(s.conn, cmd+"\r\n"); err != nil {
		t.Fatalf("%s: %v", service, err)
	}
	if _, err := io.ReadAll(s.r); err != nil {
		t.Fatalf("%s: after %s: %v", service, cmd, err)
	}
}

// waitSessions waits until HAProxy counts n sessions on server.
func (cl *cluster) waitSessions(t *testing.T, server string, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		st, err := cl.hap.Stat(server)
		if err == nil && st.Sessions == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v (%v), want %d sessions", server, st, err, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (cl *cluster) node(name string) *node {
	if name == "node1" {
		return cl.node1
	}
	return cl.node2
}

func other(name string) string {
	if name == "node1" {
		return "node2"
	}
	return "node1"
}
