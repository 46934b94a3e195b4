//go:build linux

package haproxytest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

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
