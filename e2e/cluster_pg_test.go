package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/haproxytest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/pgtest"
	"github.com/kanmon-mail/kanmon/internal/redistest"
)

// Issue 13: three `kanmon serve` nodes behind the real HAProxy (the
// contrib/haproxy/haproxy.cfg file as it ships: round robin or leastconn,
// send-proxy-v2, health checks), accounts in a real PostgreSQL, lockout
// state in a real Redis, in front of the real Dovecot. Each node listens
// on its own loopback address (127.0.0.11–13) at one shared port, as
// three machines would; clients connect to HAProxy from 127.0.0.5 and up.

// pgCluster is the running cluster.
type pgCluster struct {
	bin     string
	files   []*kanmontest.Files
	nodes   []*serveProcess
	pg      *pgtest.Server
	haproxy *haproxytest.Server
	conn    *pgx.Conn // the test's own queries
	front   string    // HAProxy's IMAPS frontend
	port    int       // the nodes' shared IMAPS port
}

// startPGCluster starts PostgreSQL, Redis, three nodes and HAProxy, and
// gives alice 2FA through node 1's CLI.
func startPGCluster(t testing.TB, dc *dovecottest.Server) *pgCluster {
	t.Helper()
	c := &pgCluster{bin: buildKanmon(t), pg: pgtest.Start(t, pgtest.Options{})}
	r := redistest.Start(t, redistest.Options{})
	nodes := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	port, err := haproxytest.FreePort(nodes...)
	if err != nil {
		t.Fatal(err)
	}
	c.port = port
	dbURL := c.pg.URL() + "&passfile=" + url.QueryEscape(c.pg.PassFile(t))
	listenerRE := regexp.MustCompile(`(\[\[listener\]\]\nprotocol = "imap"\naddress\s*= )"127\.0\.0\.1:\d+"`)
	accountsRE := regexp.MustCompile(`(?m)^accounts\s*=.*$`)
	for i, ip := range nodes {
		f := serveFiles(t, dc, kanmontest.Options{
			TrustedNetworks: []string{"127.0.0.1/32"},
			Listeners:       []string{config.TLSImplicit},
			ListenerExtra:   "proxy_protocol = true\n",
			Extra:           "proxy_trusted_networks = [\"127.0.0.1/32\"]\n",
			Lockout:         kanmontest.DefaultLockout + "account_ip_window = \"720h\"\n",
		})
		text, err := os.ReadFile(f.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		if len(listenerRE.FindAll(text, -1)) != 1 {
			t.Fatalf("want one listener address in %s", f.ConfigPath)
		}
		text = listenerRE.ReplaceAll(text, []byte(fmt.Sprintf("${1}\"%s:%d\"", ip, port)))
		text = accountsRE.ReplaceAll(text, []byte(fmt.Sprintf("accounts = %q", dbURL)))
		text = append(text, fmt.Sprintf("\n[redis]\nurl = %q\nnode = \"node%d\"\n", r.URL(), i+1)...)
		writeFile(t, f.ConfigPath, string(text))
		c.files = append(c.files, f)
	}
	// Every node serves the same certificate, and shares node 1's pepper
	// and totp.key, made when node 1 first starts.
	for _, f := range c.files[1:] {
		for _, name := range []string{"cert.pem", "key.pem"} {
			copyFile(t, filepath.Join(c.files[0].Dir, name), filepath.Join(f.Dir, name))
		}
	}
	c.nodes = append(c.nodes, startServe(t, c.bin, c.files[0].ConfigPath, fmt.Sprintf("%s:%d", nodes[0], port)))
	for i, f := range c.files[1:] {
		for _, name := range []string{auth.PepperFileName, auth.TOTPKeyFileName} {
			copyFile(t, filepath.Join(c.files[0].Dir, "state", name), filepath.Join(f.Dir, "state", name))
		}
		c.nodes = append(c.nodes, startServe(t, c.bin, f.ConfigPath, fmt.Sprintf("%s:%d", nodes[i+1], port)))
	}
	opts := haproxytest.ContribOptions(t, haproxytest.Contrib{Nodes: nodes, Ports: map[string]int{"imaps": port}})
	c.haproxy = haproxytest.Start(t, opts)
	c.haproxy.WaitStatus(t, 20*time.Second, haproxytest.ContribStatus("UP", 3, "imaps"))
	c.front = c.haproxy.Addr(haproxytest.ListenVar("imaps"))
	mustRun(t, c.bin, "2fa", "enable", "-config", c.files[0].ConfigPath, "alice")
	c.waitApplied(t, "every node to apply alice's 2FA")
	return c
}

// copyFile copies a file (mode 0600), making its directory.
func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}

// generationRE finds the generations a node logged applying.
var generationRE = regexp.MustCompile(`msg="accounts changed in the database" generation=(\d+) `)

// applied returns the lowest generation of the accounts that every live
// node has applied from the database (0 before any change).
func (c *pgCluster) applied() int64 {
	least := int64(-1)
	for _, p := range c.nodes {
		select {
		case <-p.done:
			continue
		default:
		}
		var g int64
		for _, m := range generationRE.FindAllStringSubmatch(p.log.String(), -1) {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			g = max(g, n)
		}
		if least < 0 || g < least {
			least = g
		}
	}
	return least
}

// generation is the database's generation: the count of changes.
func (c *pgCluster) generation(t testing.TB) int64 {
	t.Helper()
	if c.conn == nil || c.conn.IsClosed() {
		c.conn = c.pg.Conn(t)
	}
	var g int64
	if err := c.conn.QueryRow(context.Background(), "SELECT generation FROM kanmon_meta").Scan(&g); err != nil {
		t.Fatal(err)
	}
	return g
}

// waitApplied waits until every live node has applied the database's
// last change.
func (c *pgCluster) waitApplied(t testing.TB, what string) {
	t.Helper()
	g := c.generation(t)
	waitFor(t, 2*time.Second, what, func() bool { return c.applied() >= g })
}

// loginsOn returns, per node, how many of the node's log lines show a
// login of user from ip.
func (c *pgCluster) loginsOn(user, ip string) []int {
	out := make([]int, len(c.nodes))
	for i, p := range c.nodes {
		out[i] = countLogLines(p.log.String(), "msg=login ", "client="+ip+" ", "user="+user+" ")
	}
	return out
}

func TestE2EClusterThreeNodesBehindHAProxy(t *testing.T) {
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	c := startPGCluster(t, dc)
	conf := c.files[0].ClientTLS

	// 1. A passcode made with node 1's CLI works on every node at once,
	// with no reload: IDLE sessions through HAProxy land on all three.
	code := cliAddPasscode(t, c.bin, "-config", c.files[0].ConfigPath, "alice", "Thunderbird")
	c.waitApplied(t, "every node to apply the new passcode")
	var idle []*revokeIdle
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := &revokeIdle{lineFrom(t, c.front, "127.0.0.5", nil, conf)}
		s.expect("* OK ")
		if r := s.command("a1 LOGIN alice " + code); !strings.HasPrefix(r, "OK") {
			t.Fatalf("login through HAProxy: %s", r)
		}
		s.command("a2 SELECT INBOX")
		s.writeLine("a3 IDLE")
		s.expect("+ ")
		idle = append(idle, s)
		per := c.loginsOn("alice", "127.0.0.5")
		if per[0] > 0 && per[1] > 0 && per[2] > 0 {
			t.Logf("sessions per node: %v", per)
			break
		}
		if time.Now().After(deadline) || len(idle) > 12 {
			t.Fatalf("after %d logins, per node: %v (want every node)", len(idle), per)
		}
	}
	// 3. The client's own address is what every node saw.
	for i, p := range c.nodes {
		if !strings.Contains(p.log.String(), "client=127.0.0.5 ") {
			t.Errorf("node %d never logged client=127.0.0.5", i+1)
		}
	}

	// 2. A revoke on node 2's CLI closes every IDLE session, on all three
	// nodes, within a second, and the next login fails everywhere.
	start := time.Now()
	mustRun(t, c.bin, "passcode", "revoke", "-config", c.files[1].ConfigPath, "alice", "Thunderbird")
	var wg sync.WaitGroup
	took := make([]time.Duration, len(idle))
	for i, s := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.revoked(start)
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, d := range took {
		if d > time.Second {
			t.Errorf("session %d closed %v after the revoke, want within 1 s", i+1, d)
		}
	}
	t.Logf("revoke → BYE on every node: %v", took)
	for range 3 {
		wantFailed(t, "the revoked passcode", loginAt(t, c.front, conf, "127.0.0.5", "alice", code))
	}

	// 5. PostgreSQL stopped: logins go on from the snapshot, changes are
	// refused with a clear error; started again: a revoke made afterwards
	// reaches every node.
	code2 := cliAddPasscode(t, c.bin, "-config", c.files[2].ConfigPath, "alice", "Phone")
	waitFor(t, 5*time.Second, "the new passcode on every node", func() bool {
		return strings.HasPrefix(loginAt(t, c.front, conf, "127.0.0.6", "alice", code2), "OK")
	})
	c.pg.Stop(t)
	for range 6 {
		wantOK(t, "a login with PostgreSQL stopped", loginAt(t, c.front, conf, "127.0.0.6", "alice", code2))
	}
	out, err := runKanmon(c.bin, "passcode", "add", "-config", c.files[0].ConfigPath, "alice", "Tablet")
	if err == nil || !strings.Contains(out, "accounts database unavailable") {
		t.Fatalf("passcode add with PostgreSQL stopped: %v\n%s", err, out)
	}
	c.pg.Start(t)
	waitFor(t, 20*time.Second, "every node to reconnect", func() bool {
		for _, p := range c.nodes {
			if !strings.Contains(p.log.String(), "accounts database answers again") {
				return false
			}
		}
		return true
	})
	mustRun(t, c.bin, "passcode", "revoke", "-config", c.files[0].ConfigPath, "alice", "Phone")
	waitFor(t, 2*time.Second, "the revoke to reach every node", func() bool {
		for range 3 {
			if !strings.HasPrefix(loginAt(t, c.front, conf, "127.0.0.6", "alice", code2), "NO") {
				return false
			}
		}
		return true
	})

	// 4. A failed-login storm through HAProxy locks alice at 127.0.0.7
	// at the global threshold (10) though it is spread over the nodes;
	// node 3 is killed (-9) in the middle: HAProxy moves the clients, and
	// the lock holds on the two left.
	for i := range 5 {
		wantFailed(t, fmt.Sprintf("storm %d", i+1), loginAt(t, c.front, conf, "127.0.0.7", "alice", wrongPasscode(i)))
	}
	c.nodes[2].kill9(t)
	c.haproxy.WaitStatus(t, 10*time.Second, map[string]string{"bk_imaps/node3": "DOWN"})
	for i := 5; i < 10; i++ {
		wantFailed(t, fmt.Sprintf("storm %d", i+1), loginAt(t, c.front, conf, "127.0.0.7", "alice", wrongPasscode(i)))
	}
	for range 4 {
		wantFailed(t, "storm after the lock", loginAt(t, c.front, conf, "127.0.0.7", "alice", wrongPasscode(50)))
	}
	for n := range 2 {
		waitFor(t, 5*time.Second, fmt.Sprintf("node %d to refuse 127.0.0.7 as locked", n+1), func() bool {
			return strings.Contains(c.nodes[n].log.String(), `client=127.0.0.7 user=alice reason="locked: account+ip"`)
		})
	}
}

// runKanmon runs the binary and returns its combined output and error.
func runKanmon(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
