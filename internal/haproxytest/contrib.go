//go:build unix

package haproxytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Services are the services of contrib/haproxy/haproxy.cfg. Each has a
// frontend ft_SERVICE that listens at ListenVar(SERVICE) and a backend
// bk_SERVICE of the servers node1, node2 (and node3) at their port
// NodePortVar(SERVICE). Every backend but the portal's sends a PROXY v2
// header.
var Services = []string{"imaps", "imap", "pop3s", "pop3", "submissions", "submission", "portal"}

// ListenVar is the contrib configuration's environment variable of the
// address its frontend of service listens at, e.g. "KANMON_LISTEN_IMAP";
// Server.Addr(ListenVar("imap")) is that address under ContribOptions.
func ListenVar(service string) string { return "KANMON_LISTEN_" + strings.ToUpper(service) }

// NodePortVar is the contrib configuration's environment variable of the
// nodes' port of service, e.g. "KANMON_NODE_PORT_IMAP".
func NodePortVar(service string) string { return "KANMON_NODE_PORT_" + strings.ToUpper(service) }

// NodeVar is the contrib configuration's environment variable of node i's
// address (1 to 3), e.g. "KANMON_NODE1".
func NodeVar(i int) string { return "KANMON_NODE" + strconv.Itoa(i) }

// Backend is the contrib configuration's backend of service, e.g. "bk_imap".
func Backend(service string) string { return "bk_" + service }

// Contrib describes the kanmon nodes (or stand-ins) behind the contrib
// configuration in a test.
type Contrib struct {
	// Nodes are the addresses of node1, node2 and, if there is a third,
	// node3 (KANMON_NODE1..3): two or three, each a distinct loopback
	// address such as 127.0.0.11, since all nodes share the ports.
	Nodes []string
	// Ports are the nodes' ports by service (KANMON_NODE_PORT_*), e.g.
	// {"imap": 10143}. A service left out gets a port where nothing
	// listened a moment ago: its backend's servers go DOWN.
	Ports map[string]int
	// CheckInter is the time between health checks (KANMON_CHECK_INTER),
	// in whole milliseconds. It also bounds a check's connection and TLS
	// handshake (HAProxy's connect timeout for checks is the smaller of
	// "timeout connect" and inter), so a short one makes checks fail on
	// a busy machine. Default 500ms: a node that stops answering is DOWN
	// after three failed checks, in about 1.5 s, and UP again after two
	// passed ones.
	CheckInter time.Duration
	// Env is added to the environment last, so it may override any of the
	// contrib configuration's variables but the KANMON_LISTEN_* ones.
	Env map[string]string
}

// ContribConfig returns the path of contrib/haproxy/haproxy.cfg, looked for
// from the current directory (a test's package directory) up to the
// module's root.
func ContribConfig(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("haproxytest: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "contrib", "haproxy", "haproxy.cfg")
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("haproxytest: %v", err)
			}
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("haproxytest: no go.mod above the current directory")
		}
		dir = parent
	}
}

// ContribOptions returns Options that run contrib/haproxy/haproxy.cfg as it
// is, in front of c's nodes: every frontend listens at a free loopback
// address (Server.Addr(ListenVar(service))), HAProxy's log goes to its
// stderr (Server.Log), its own admin socket is admin.sock in Server.Dir,
// and it neither chroots nor switches to user haproxy
// (KANMON_HAPROXY_KEEP_USER), so that it runs as any user and dies with
// the test binary. Start it with Start.
func ContribOptions(t testing.TB, c Contrib) Options {
	t.Helper()
	if len(c.Nodes) < 2 || len(c.Nodes) > 3 {
		t.Fatalf("haproxytest: Contrib.Nodes has %d addresses, want 2 or 3", len(c.Nodes))
	}
	inter := c.CheckInter
	if inter == 0 {
		inter = 500 * time.Millisecond
	}
	if inter < time.Millisecond || inter%time.Millisecond != 0 {
		t.Fatalf("haproxytest: Contrib.CheckInter %v is not whole milliseconds", inter)
	}
	env := map[string]string{
		"KANMON_CHECK_INTER":       fmt.Sprintf("%dms", inter/time.Millisecond),
		"KANMON_HAPROXY_LOG":       "stderr",
		"KANMON_HAPROXY_SOCKET":    "unix@admin.sock",
		"KANMON_HAPROXY_KEEP_USER": "1",
	}
	for i, n := range c.Nodes {
		env[NodeVar(i+1)] = n
	}
	known := map[string]bool{}
	for _, svc := range Services {
		known[svc] = true
		port, ok := c.Ports[svc]
		if !ok {
			var err error
			if port, err = FreePort(c.Nodes...); err != nil {
				t.Fatalf("haproxytest: %v", err)
			}
		}
		env[NodePortVar(svc)] = strconv.Itoa(port)
	}
	for svc := range c.Ports {
		if !known[svc] {
			t.Fatalf("haproxytest: Contrib.Ports: no service %q in the contrib configuration (%v)", svc, Services)
		}
	}
	for k, v := range c.Env {
		env[k] = v
	}
	opts := Options{ConfigFile: ContribConfig(t), Env: env}
	for _, svc := range Services {
		opts.Listen = append(opts.Listen, ListenVar(svc))
	}
	return opts
}

// ContribStatus returns, for WaitStatus, status for every node of each of
// services: ContribStatus("UP", 2, "imap") is {"bk_imap/node1": "UP",
// "bk_imap/node2": "UP"}.
func ContribStatus(status string, nodes int, services ...string) map[string]string {
	m := map[string]string{}
	for _, svc := range services {
		for i := 1; i <= nodes; i++ {
			m[Backend(svc)+"/node"+strconv.Itoa(i)] = status
		}
	}
	return m
}
