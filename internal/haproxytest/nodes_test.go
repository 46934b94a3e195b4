//go:build linux

package haproxytest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/proxyproto"
)

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
