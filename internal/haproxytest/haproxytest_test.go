//go:build linux

package haproxytest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/proxyproto"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/internal/testenv"
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

// implicitTLS are the services whose nodes speak TLS from the first byte
// after the PROXY header.
var implicitTLS = map[string]bool{"imaps": true, "pop3s": true, "submissions": true, "portal": true}

// dialect is the protocol a service speaks: imap, pop3 or smtp (or http).
func dialect(service string) string {
	switch strings.TrimSuffix(service, "s") {
	case "imap":
		return "imap"
	case "pop3":
		return "pop3"
	case "submission":
		return "smtp"
	}
	return "http"
}

// accepted is one connection a node stand-in accepted.
type accepted struct {
	node, service string
	header        proxyproto.Header // the PROXY header (none for the portal)
	remote        netip.AddrPort    // the TCP peer: HAProxy
}

// recorder gathers what the node stand-ins saw.
type recorder struct {
	mu      sync.Mutex
	clients []accepted     // connections with a PROXY header for a client
	checks  map[string]int // "node/service" → health checks (LOCAL headers)
	said    map[string]int // "service: line" → lines the health checks sent
	portal  []accepted     // the portal's requests
	errs    []string       // what went wrong in the stand-ins
}

func (r *recorder) errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// client returns, and forgets, the client connection whose PROXY header
// names source and dest. A client port comes back in later connections,
// so each record is taken once. A stand-in records the header before it
// greets, so a client that has read the greeting finds it at once.
func (r *recorder) client(t *testing.T, source, dest netip.AddrPort) accepted {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for i, a := range r.clients {
			if a.header.Source == source && a.header.Dest == dest {
				r.clients = append(r.clients[:i], r.clients[i+1:]...)
				r.mu.Unlock()
				return a
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no node saw a PROXY header from %v to %v", source, dest)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// node is a stand-in for one kanmon node: a listener per service on its
// own loopback address that reads the PROXY header as kanmon does
// (internal/proxyproto), then greets, names itself in the greeting, and
// answers the logout of the health checks.
type node struct {
	name, host string
	ports      map[string]int
	tls        *tls.Config
	rec        *recorder

	mu        sync.Mutex
	listeners map[string]net.Listener
	busy      map[string]bool // services that refuse, as a full kanmon does
	conns     map[string]map[net.Conn]bool
	portals   map[string]*http.Server
	wg        sync.WaitGroup
}

// newNode serves each service on its listener in ls.
func newNode(t *testing.T, name, host string, ls map[string]net.Listener, cfg *tls.Config, rec *recorder) *node {
	n := &node{name: name, host: host, ports: map[string]int{}, tls: cfg, rec: rec,
		listeners: map[string]net.Listener{}, busy: map[string]bool{}, conns: map[string]map[net.Conn]bool{}, portals: map[string]*http.Server{}}
	for svc, l := range ls {
		n.ports[svc] = l.Addr().(*net.TCPAddr).Port
		n.serve(svc, l)
	}
	t.Cleanup(func() {
		for svc := range n.ports {
			n.stop(svc)
		}
		n.wg.Wait()
	})
	return n
}

// start listens for service on the node's port for it again, after stop.
func (n *node) start(svc string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(n.host, strconv.Itoa(n.ports[svc])))
	if err != nil {
		return err
	}
	n.serve(svc, l)
	return nil
}

// serve serves service on l.
func (n *node) serve(svc string, l net.Listener) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listeners[svc] = l
	if svc == "portal" {
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.isBusy(svc) {
					http.Error(w, "busy", http.StatusServiceUnavailable)
					return
				}
				remote, _ := netip.ParseAddrPort(r.RemoteAddr)
				n.rec.mu.Lock()
				n.rec.portal = append(n.rec.portal, accepted{node: n.name, service: svc, remote: remote})
				n.rec.mu.Unlock()
				io.WriteString(w, n.name)
			}),
			TLSConfig:         n.tls.Clone(), // ServeTLS changes it
			ReadHeaderTimeout: 5 * time.Second,
		}
		n.portals[svc] = srv
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			srv.ServeTLS(l, "", "")
		}()
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.mu.Lock()
			if n.conns[svc] == nil {
				n.conns[svc] = map[net.Conn]bool{}
			}
			n.conns[svc][c] = true
			n.mu.Unlock()
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				defer func() {
					c.Close()
					n.mu.Lock()
					delete(n.conns[svc], c)
					n.mu.Unlock()
				}()
				n.handle(svc, c)
			}()
		}
	}()
}

// setBusy makes the service refuse every connection, or serve again.
func (n *node) setBusy(svc string, busy bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.busy[svc] = busy
}

func (n *node) isBusy(svc string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.busy[svc]
}

// stop closes the service's listener and its open connections, as a node
// that stops does.
func (n *node) stop(svc string) {
	n.mu.Lock()
	l := n.listeners[svc]
	delete(n.listeners, svc)
	srv := n.portals[svc]
	delete(n.portals, svc)
	var open []net.Conn
	for c := range n.conns[svc] {
		open = append(open, c)
	}
	n.mu.Unlock()
	if srv != nil {
		srv.Close()
	} else if l != nil {
		l.Close()
	}
	for _, c := range open {
		c.Close()
	}
}

// handle reads the PROXY header of one connection and speaks the service's
// protocol on it until the client logs out or goes.
func (n *node) handle(svc string, c net.Conn) {
	c.SetDeadline(time.Now().Add(time.Minute))
	h, err := proxyproto.Read(c)
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			n.rec.errorf("%s %s: PROXY header: %v", n.name, svc, err)
		}
		return
	}
	a := accepted{node: n.name, service: svc, header: h, remote: proxyproto.AddrPort(c.RemoteAddr())}
	n.rec.mu.Lock()
	if h.Local {
		if n.rec.checks == nil {
			n.rec.checks = map[string]int{}
		}
		n.rec.checks[n.name+"/"+svc]++
	} else {
		n.rec.clients = append(n.rec.clients, a)
	}
	n.rec.mu.Unlock()
	var rw net.Conn = c
	if implicitTLS[svc] {
		tc := tls.Server(c, n.tls)
		if err := tc.Handshake(); err != nil {
			return
		}
		rw = tc
	}
	r := bufio.NewReader(rw)
	say := func(lines ...string) bool {
		_, err := io.WriteString(rw, strings.Join(lines, "\r\n")+"\r\n")
		return err == nil
	}
	if n.isBusy(svc) {
		// What kanmon says at max_connections.
		say(map[string]string{
			"imap": "* BYE [UNAVAILABLE] Too many connections; please try again later.",
			"pop3": "-ERR [SYS/TEMP] Too many connections; please try again later.",
			"smtp": "421 4.7.0 Too many connections; please try again later.",
		}[dialect(svc)])
		return
	}
	switch dialect(svc) {
	case "imap":
		if !say("* OK [" + n.name + "] kanmon stand-in ready.") {
			return
		}
	case "pop3":
		if !say("+OK [" + n.name + "] kanmon stand-in ready.") {
			return
		}
	case "smtp":
		if !say("220 " + n.name + " ESMTP kanmon stand-in ready") {
			return
		}
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if h.Local {
			n.rec.mu.Lock()
			if n.rec.said == nil {
				n.rec.said = map[string]int{}
			}
			n.rec.said[svc+": "+strings.TrimRight(line, "\r\n")]++
			n.rec.mu.Unlock()
		}
		f := strings.Fields(line)
		switch dialect(svc) {
		case "imap":
			if len(f) == 2 && strings.EqualFold(f[1], "LOGOUT") {
				say("* BYE Logging out.", f[0]+" OK LOGOUT completed.")
				return
			}
			tag := "*"
			if len(f) > 0 {
				tag = f[0]
			}
			say(tag + " BAD Not here.")
		case "pop3":
			if len(f) == 1 && strings.EqualFold(f[0], "QUIT") {
				say("+OK Logging out.")
				return
			}
			say("-ERR Not here.")
		case "smtp":
			if len(f) == 1 && strings.EqualFold(f[0], "QUIT") {
				say("221 2.0.0 Bye")
				return
			}
			say("502 5.5.1 Not here.")
		}
	}
}

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

// TestContribConfig runs contrib/haproxy/haproxy.cfg as it is in front of
// two stand-ins for kanmon nodes.
func TestContribConfig(t *testing.T) {
	cl := startCluster(t)

	t.Run("health checks send a LOCAL PROXY header", func(t *testing.T) {
		cl.rec.mu.Lock()
		defer cl.rec.mu.Unlock()
		for _, n := range []string{"node1", "node2"} {
			for _, svc := range Services {
				if svc == "portal" {
					continue
				}
				if got := cl.rec.checks[n+"/"+svc]; got < 1 {
					t.Errorf("%s %s: no health check with a LOCAL header", n, svc)
				}
			}
		}
		// They log out, as a client would.
		for _, svc := range Services {
			want := map[string]string{"imap": "C1 LOGOUT", "pop3": "QUIT", "smtp": "QUIT"}[dialect(svc)]
			if want != "" && cl.rec.said[svc+": "+want] == 0 {
				t.Errorf("%s: no health check sent %q; they sent %v", svc, want, cl.rec.said)
			}
		}
		if len(cl.rec.said) != len(Services)-1 { // all but the portal
			t.Errorf("the health checks sent %v, want one command per service", cl.rec.said)
		}
		if len(cl.rec.clients) != 0 {
			t.Errorf("before any client: %d connections with a client's header: %+v", len(cl.rec.clients), cl.rec.clients)
		}
	})

	// IMAP balances by leastconn: a new session goes to the node with
	// fewer, and between equals round robin.
	for _, svc := range []string{"imap", "imaps"} {
		t.Run(svc+" leastconn", func(t *testing.T) {
			var held []*session
			for i := 0; i < 4; i++ {
				held = append(held, cl.connect(t, svc))
			}
			if held[0].node == held[1].node || held[2].node == held[3].node {
				t.Fatalf("4 sessions went to %s %s %s %s; leastconn gives each node one of each pair",
					held[0].node, held[1].node, held[2].node, held[3].node)
			}
			// Free one node: both next sessions go there, where round
			// robin would send one to each.
			freed := held[0].node
			var kept []*session
			for _, s := range held {
				if s.node == freed {
					s.logout(t, svc)
				} else {
					kept = append(kept, s)
				}
			}
			cl.waitSessions(t, Backend(svc)+"/"+freed, 0)
			for i := 0; i < 2; i++ {
				s := cl.connect(t, svc)
				if s.node != freed {
					t.Errorf("session %d after freeing %s went to %s; leastconn sends it to the node with fewer", i+1, freed, s.node)
				}
				kept = append(kept, s)
			}
			for _, s := range kept {
				s.logout(t, svc)
			}
			cl.waitSessions(t, Backend(svc)+"/node1", 0)
			cl.waitSessions(t, Backend(svc)+"/node2", 0)
		})
	}

	// POP3 and submission balance by roundrobin: one session after the
	// other alternates between the nodes.
	for _, svc := range []string{"pop3", "pop3s", "submission", "submissions"} {
		t.Run(svc+" roundrobin", func(t *testing.T) {
			var nodes []string
			for i := 0; i < 4; i++ {
				s := cl.connect(t, svc)
				nodes = append(nodes, s.node)
				s.logout(t, svc)
			}
			for i := 1; i < len(nodes); i++ {
				if nodes[i] == nodes[i-1] {
					t.Fatalf("sessions went to %v; roundrobin alternates", nodes)
				}
			}
		})
	}

	t.Run("portal roundrobin without a PROXY header", func(t *testing.T) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientHost)}, Timeout: 5 * time.Second}
		client := &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				TLSClientConfig:   cl.tls,
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return d.DialContext(ctx, network, cl.hap.Addr(ListenVar("portal")))
				},
			},
		}
		var nodes []string
		for i := 0; i < 4; i++ {
			resp, err := client.Get("https://localhost/signin")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			nodes = append(nodes, string(body))
		}
		for i := 1; i < len(nodes); i++ {
			if nodes[i] == nodes[i-1] {
				t.Fatalf("requests went to %v; roundrobin alternates", nodes)
			}
		}
		cl.rec.mu.Lock()
		defer cl.rec.mu.Unlock()
		for _, a := range cl.rec.portal {
			if a.remote.Addr() == netip.MustParseAddr(clientHost) {
				t.Errorf("the portal saw the client %v itself; HAProxy is in between", a.remote)
			}
		}
	})

	// A node that answers with its refusal (kanmon at max_connections:
	// "* BYE", "-ERR", "421"; a portal's 503) fails the checks, and new
	// sessions go to the other node.
	t.Run("a refusing node is DOWN", func(t *testing.T) {
		down, up := map[string]string{}, map[string]string{}
		for _, svc := range Services {
			cl.node2.setBusy(svc, true)
			down[Backend(svc)+"/node2"] = "DOWN"
			up[Backend(svc)+"/node1"] = "UP"
		}
		took := cl.hap.WaitStatus(t, waitLimit, down)
		t.Logf("node2 refusing: DOWN in every backend after %v", took.Round(time.Millisecond))
		cl.hap.WaitStatus(t, waitLimit, up)
		for i := 0; i < 2; i++ {
			s := cl.connect(t, "imap")
			if s.node != "node1" {
				t.Errorf("a session went to %s, which is DOWN", s.node)
			}
			s.logout(t, "imap")
		}
		for _, svc := range Services {
			cl.node2.setBusy(svc, false)
		}
		took = cl.hap.WaitStatus(t, waitLimit, ContribStatus("UP", 2, Services...))
		t.Logf("node2 serving again: UP in every backend after %v", took.Round(time.Millisecond))
	})

	// A node that stops is marked DOWN by the health checks, and its
	// sessions go to the other; when it is back, it is UP again.
	t.Run("failover", func(t *testing.T) {
		// node2 stops serving IMAP (leastconn) and POP3 (roundrobin).
		const down, up = "node2", "node1"
		svcs := []string{"imap", "pop3"}
		stopped := time.Now()
		for _, svc := range svcs {
			cl.node(down).stop(svc)
		}
		// Sessions opened before the checks notice go to the other node
		// too: a refused connection is retried there (option redispatch).
		for _, svc := range svcs {
			for i := 0; i < 2; i++ {
				t0 := time.Now()
				s := cl.connect(t, svc)
				if s.node == down {
					t.Fatalf("%s: a session went to the stopped %s", svc, down)
				}
				t.Logf("%s: session %d right after the stop: %s, in %v", svc, i+1, s.node, time.Since(t0).Round(time.Millisecond))
				s.logout(t, svc)
			}
		}
		want := ContribStatus("DOWN", 2, svcs...)
		for _, svc := range svcs {
			want[Backend(svc)+"/"+up] = "UP"
		}
		cl.hap.WaitStatus(t, waitLimit, want)
		t.Logf("%v: %s DOWN %v after it stopped", svcs, down, time.Since(stopped).Round(time.Millisecond))
		for _, svc := range svcs {
			for i := 0; i < 4; i++ {
				s := cl.connect(t, svc)
				if s.node == down {
					t.Fatalf("%s: a session went to %s, which is DOWN", svc, down)
				}
				s.logout(t, svc)
			}
		}
		started := time.Now()
		for _, svc := range svcs {
			if err := cl.node(down).start(svc); err != nil {
				t.Fatal(err)
			}
		}
		cl.hap.WaitStatus(t, waitLimit, ContribStatus("UP", 2, svcs...))
		t.Logf("%v: %s UP again %v after it restarted", svcs, down, time.Since(started).Round(time.Millisecond))
		// leastconn or roundrobin, of two sessions held open one goes to
		// each node.
		for _, svc := range svcs {
			seen := map[string]bool{}
			var held []*session
			for i := 0; i < 2; i++ {
				s := cl.connect(t, svc)
				seen[s.node] = true
				held = append(held, s)
			}
			for _, s := range held {
				s.logout(t, svc)
			}
			if !seen[down] {
				t.Errorf("%s: no session went to %s after it came back", svc, down)
			}
		}
	})

	if t.Failed() {
		return
	}
	log := cl.hap.Log()
	for _, want := range []string{"is DOWN", "is UP"} {
		if !strings.Contains(log, want) {
			t.Errorf("HAProxy's log (stderr) has no %q:\n%s", want, log)
		}
	}
}

// TestContribConfigCheck has haproxy -c check the contrib configuration as
// production runs it: no variables set (chroot, user haproxy, the sample
// addresses), and with a third node.
func TestContribConfigCheck(t *testing.T) {
	bin, ok := binary(t)
	if !ok {
		return
	}
	cfg := ContribConfig(t)
	for _, env := range [][]string{nil, {"KANMON_NODE3=10.0.0.13"}} {
		cmd := exec.Command(bin, "-c", "-f", cfg)
		cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Configuration file is valid") {
			t.Errorf("haproxy -c -f %s with %v: %v\n%s", cfg, env, err, out)
		}
		if strings.Contains(string(out), "WARNING") {
			t.Errorf("haproxy -c -f %s with %v warns:\n%s", cfg, env, out)
		}
	}
}

func TestParseStats(t *testing.T) {
	out := "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,check_status,last_chk,\n" +
		"ft_imap,FRONTEND,,,0,1,40000,3,0,0,0,0,0,,,,,OPEN,,,\n" +
		"bk_imap,node1,0,0,2,2,,5,0,0,,0,,0,0,0,0,UP,* L7OK,(tcp-check),\n" +
		"bk_imap,node2,0,0,0,1,,1,0,0,,0,,0,0,0,0,DOWN 1/2,L4CON,\"Connection refused, twice\",\n" +
		"bk_imap,node3,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,,,\n" +
		"bk_imap,BACKEND,0,0,2,2,4000,6,0,0,0,0,,0,0,0,0,UP,,,\n\n"
	got, err := parseStats(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Stat{
		{"bk_imap", "node1", "UP", "L7OK", "(tcp-check)", 2, 5},
		{"bk_imap", "node2", "DOWN 1/2", "L4CON", "Connection refused, twice", 0, 1},
		{"bk_imap", "node3", "no check", "", "", 0, 0},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseStats = %+v, want %+v", got, want)
	}
	if _, err := parseStats("Unknown command\n"); err == nil {
		t.Error("parseStats took an error message")
	}
}

func TestAtLeast(t *testing.T) {
	for v, want := range map[string]bool{"2.6.12": true, "2.4": true, "2.3.9": false, "3.0.1": true, "1.9": false, "x": false} {
		if got := atLeast(v, 2, 4); got != want {
			t.Errorf("atLeast(%q, 2, 4) = %v", v, got)
		}
	}
}

// TestUnavailable checks that a missing HAProxy skips the test, and fails it
// under CI=true.
func TestUnavailable(t *testing.T) {
	testenv.CheckUnavailable(t, haproxy)
}
