package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/redistest"
)

// Issue 12: several `kanmon serve` nodes in front of one Dovecot share
// their lockout state through a real Redis (or a Sentinel set), as one
// node would. Client addresses are loopback ones, picked per test.

// cluster is n kanmon serve nodes sharing one accounts file and pepper
// (as every node of a real cluster must), with their own state_dir and
// listeners.
type cluster struct {
	bin      string
	files    []*kanmontest.Files
	nodes    []*serveProcess
	passcode string // alice's Thunderbird passcode
}

// clusterOptions describe a cluster.
type clusterOptions struct {
	nodes   int
	redis   string // the body of [redis], without node
	lockout string // appended to [lockout]
	// lockoutBase starts [lockout]; default kanmontest.DefaultLockout.
	lockoutBase string
	// perProtocol gives each node POP3 and submission listeners too.
	perProtocol bool
	// plaintext gives each node a plaintext IMAP listener instead of an
	// implicit-TLS one (the benchmarks').
	plaintext bool
	// extra is appended to the top level of each config.
	extra string
	// twoFA are more accounts to give 2FA (with no passcode).
	twoFA []string
}

// startCluster writes the nodes' configs, gives alice 2FA with a
// Thunderbird passcode (through node 1's CLI) and starts the nodes.
func startCluster(t testing.TB, dc *dovecottest.Server, o clusterOptions) *cluster {
	t.Helper()
	c := &cluster{bin: buildKanmon(t)}
	if o.lockoutBase == "" {
		o.lockoutBase = kanmontest.DefaultLockout
	}
	opts := kanmontest.Options{
		Lockout:         o.lockoutBase + "account_ip_window = \"720h\"\n" + o.lockout,
		TrustedNetworks: []string{"127.0.0.1/32"},
		Extra:           o.extra,
	}
	if o.plaintext {
		opts.Listeners = []string{config.TLSNone}
	}
	if o.perProtocol {
		opts.POP3Backend, opts.SubmissionBackend = dc.POP3Addr, dc.SubmissionAddr
	}
	for i := range o.nodes {
		f := serveFiles(t, dc, opts)
		c.files = append(c.files, f)
		appendConfig(t, f.ConfigPath, fmt.Sprintf("\n[redis]\n%snode = \"node%d\"\n", o.redis, i+1))
	}
	first := c.files[0]
	for _, u := range append([]string{"alice"}, o.twoFA...) {
		mustRun(t, c.bin, "2fa", "enable", "-config", first.ConfigPath, u)
	}
	c.passcode = cliAddPasscode(t, c.bin, "-config", first.ConfigPath, "alice", "Thunderbird")
	for _, f := range c.files[1:] {
		shareAccounts(t, first, f)
	}
	for _, f := range c.files {
		addr := f.IMAPS
		if o.plaintext {
			addr = f.IMAPPlain
		}
		c.nodes = append(c.nodes, startServe(t, c.bin, f.ConfigPath, addr))
	}
	return c
}

// appendConfig appends text to the config file at path.
func appendConfig(t testing.TB, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// shareAccounts points the config of to at from's accounts file, and
// copies from's pepper into to's state_dir.
func shareAccounts(t testing.TB, from, to *kanmontest.Files) {
	t.Helper()
	fromCfg, err := config.Load(from.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(to.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^accounts\s*=.*$`)
	if !re.Match(text) {
		t.Fatalf("no accounts line in %s", to.ConfigPath)
	}
	text = re.ReplaceAll(text, []byte(fmt.Sprintf("accounts = %q", fromCfg.Accounts)))
	writeFile(t, to.ConfigPath, string(text))
	toCfg, err := config.Load(to.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	pepper, err := os.ReadFile(filepath.Join(fromCfg.StateDir, auth.PepperFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(toCfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(toCfg.StateDir, auth.PepperFileName), string(pepper))
}

// login makes one IMAP LOGIN at node i from ip.
func (c *cluster) login(t *testing.T, i int, ip, user, secret string) string {
	t.Helper()
	return loginAt(t, c.files[i].IMAPS, c.files[i].ClientTLS, ip, user, secret)
}

// A storm split across two nodes locks alice at 127.0.0.2 at the global
// threshold (10 failures, 5 on each node), on both nodes; her right
// passcode from elsewhere still logs in; `kanmon lockout list` on either
// node shows the lock, and `lockout clear` on one lifts it on both.
func TestE2EClusterSharedLockout(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	c := startCluster(t, dc, clusterOptions{nodes: 2, redis: fmt.Sprintf("url = %q\n", r.URL())})
	for i := range 10 {
		wantFailed(t, fmt.Sprintf("wrong passcode %d on node %d", i+1, i%2+1), c.login(t, i%2, "127.0.0.2", "alice", wrongPasscode(i)))
	}
	for n := range 2 {
		wantFailed(t, fmt.Sprintf("right passcode? no: a wrong one while locked, node %d", n+1), c.login(t, n, "127.0.0.2", "alice", wrongPasscode(20+n)))
		waitFor(t, 5*time.Second, fmt.Sprintf("node %d to log the lock", n+1), func() bool {
			return strings.Contains(c.nodes[n].log.String(), `client=127.0.0.2 user=alice reason="locked: account+ip"`)
		})
	}
	wantOK(t, "alice's passcode from another address", c.login(t, 1, "127.0.0.3", "alice", c.passcode))
	for n, f := range c.files {
		if list := mustRun(t, c.bin, "lockout", "list", "-config", f.ConfigPath); !strings.Contains(list, "account+ip alice 127.0.0.2 failures=10 ") {
			t.Fatalf("lockout list on node %d:\n%s", n+1, list)
		}
	}
	if out := mustRun(t, c.bin, "lockout", "clear", "-config", c.files[0].ConfigPath, "127.0.0.2"); !strings.Contains(out, "Cleared") {
		t.Fatalf("lockout clear: %s", out)
	}
	wantOK(t, "alice's passcode on node 2 after the clear on node 1", c.login(t, 1, "127.0.0.2", "alice", c.passcode))

	// A session open on node 1 is listed by kanmon sessions on node 2,
	// with its node, within a heartbeat or two.
	open := dialIMAPSFrom(t, c.files[0].IMAPS, c.files[0].ClientTLS, "127.0.0.4")
	defer open.conn.Close()
	wantOK(t, "alice's session on node 1", open.cmd(fmt.Sprintf("a1 LOGIN alice %q", c.passcode)))
	waitFor(t, 10*time.Second, "node 2's kanmon sessions to list node 1's session", func() bool {
		out := mustRun(t, c.bin, "sessions", "-config", c.files[1].ConfigPath)
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 3 && f[0] == "node1" && strings.Contains(line, "alice") && strings.Contains(line, "127.0.0.4") {
				return true
			}
		}
		return false
	})
}

// A stale password that node 1 saw rejected is refused by node 2 with no
// backend contact: Dovecot's log shows one check.
func TestE2EClusterStaleSecretOneBackendCheck(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	dc := startDovecot(t, dovecottest.Options{}, "alice", "carol")
	c := startCluster(t, dc, clusterOptions{nodes: 2, redis: fmt.Sprintf("url = %q\n", r.URL())})
	// carol has no 2FA: from the campus (127.0.0.1) her password goes to Dovecot.
	wantFailed(t, "carol's old password on node 1", c.login(t, 0, "127.0.0.1", "carol", "carols-old-password"))
	waitFor(t, 5*time.Second, "Dovecot to check it", func() bool { return dovecotAuthFailures(dc.Log(), "carol") == 1 })
	for i := range 3 {
		wantFailed(t, fmt.Sprintf("the same on node 2, try %d", i+1), c.login(t, 1, "127.0.0.1", "carol", "carols-old-password"))
	}
	waitFor(t, 5*time.Second, "node 2 to refuse it as stale", func() bool {
		return countLogLines(c.nodes[1].log.String(), "user=carol ", `reason="repeated stale secret"`) == 3
	})
	if got := dovecotAuthFailures(dc.Log(), "carol"); got != 1 {
		t.Fatalf("Dovecot checked carol's stale password %d times, want 1", got)
	}
	wantOK(t, "carol's right password on node 2", c.login(t, 1, "127.0.0.1", "carol", carolPassword))
}

// With on_failure = "closed", a node whose Redis is gone answers every
// login with the protocol's temporary error, and logs the outage once;
// when Redis is back, logins go on without a restart.
func TestE2EClusterRedisDownClosed(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	sink := dovecottest.StartSink(t)
	dc := startDovecot(t, dovecottest.Options{SubmissionRelay: sink.Addr}, "alice")
	c := startCluster(t, dc, clusterOptions{nodes: 1, perProtocol: true,
		redis: fmt.Sprintf("url = %q\non_failure = \"closed\"\n", r.URL())})
	k := &kanmontest.Kanmon{Files: c.files[0]}
	r.Kill()
	want := map[string]string{
		config.ProtocolIMAP:       "NO [UNAVAILABLE]",
		config.ProtocolPOP3:       "-ERR [SYS/TEMP]",
		config.ProtocolSubmission: "454 4.7.0",
	}
	for _, proto := range []string{config.ProtocolIMAP, config.ProtocolPOP3, config.ProtocolSubmission} {
		for i := range 2 {
			nc := dialNames(t, k, proto, "127.0.0.5")
			reply := nc.login("alice", c.passcode)
			nc.conn.Close()
			if !strings.Contains(reply, want[proto]) {
				t.Fatalf("%s login %d with Redis down:\n%s\nwant %q", proto, i+1, nc.transcript(), want[proto])
			}
		}
	}
	if n := strings.Count(c.nodes[0].log.String(), "redis unavailable"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
	r.Start(t)
	waitFor(t, 15*time.Second, "the node to see Redis again", func() bool {
		return strings.Contains(c.nodes[0].log.String(), "redis answers again")
	})
	wantOK(t, "alice's passcode with Redis back", c.login(t, 0, "127.0.0.5", "alice", c.passcode))
}

// The Redis master is killed in the middle of a storm: the nodes follow
// Sentinel's failover with no restart, enforce on their own meanwhile
// (on_failure = local), and afterwards share their counters again: a new
// storm split across both nodes locks at the global threshold.
func TestE2EClusterSentinelFailoverMidStorm(t *testing.T) {
	ss := redistest.StartSentinel(t, redistest.SentinelOptions{})
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	redisConf := fmt.Sprintf("sentinels = [%s]\nmaster = %q\n", quoteList(ss.SentinelAddrs()), ss.MasterName())
	c := startCluster(t, dc, clusterOptions{nodes: 2, redis: redisConf})

	for i := range 4 {
		wantFailed(t, fmt.Sprintf("storm before the failover %d", i+1), c.login(t, i%2, "127.0.0.6", "alice", wrongPasscode(i)))
	}
	stop := make(chan struct{})
	stormDone := make(chan int)
	go func() { // a storm on other accounts, through the failover
		n := 0
		defer func() { stormDone <- n }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f := c.files[i%2]
			if r, err := tryLogin(f.IMAPS, f.ClientTLS, "127.0.0.7", fmt.Sprintf("storm%d", i%20), wrongPasscode(i)); err == nil && r != "" {
				n++
			}
		}
	}()
	ss.KillMaster(t)
	for n := range 2 {
		waitFor(t, 30*time.Second, fmt.Sprintf("node %d to follow the failover", n+1), func() bool {
			return strings.Contains(c.nodes[n].log.String(), "redis answers again")
		})
	}
	close(stop)
	if n := <-stormDone; n == 0 {
		t.Fatal("no storm login was answered")
	}
	// Shared again: 10 failures of alice at 127.0.0.8, split across the
	// nodes, lock the pair on both.
	for i := range 10 {
		wantFailed(t, fmt.Sprintf("storm after the failover %d", i+1), c.login(t, i%2, "127.0.0.8", "alice", wrongPasscode(100+i)))
	}
	for n := range 2 {
		wantFailed(t, "one more", c.login(t, n, "127.0.0.8", "alice", wrongPasscode(200+n)))
		waitFor(t, 5*time.Second, fmt.Sprintf("node %d to refuse 127.0.0.8 as locked", n+1), func() bool {
			return strings.Contains(c.nodes[n].log.String(), `client=127.0.0.8 user=alice reason="locked: account+ip"`)
		})
	}
	for n, p := range c.nodes {
		if got := strings.Count(p.log.String(), "redis unavailable"); got > 1 {
			t.Errorf("node %d logged the outage %d times, want at most once", n+1, got)
		}
	}
}

// quoteList formats addrs as the items of a TOML array.
func quoteList(addrs []string) string {
	q := make([]string, len(addrs))
	for i, a := range addrs {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}

// tryLogin is one IMAP LOGIN at addr from ip, for a goroutine: errors are
// returned, not fatal. It returns the tagged reply.
func tryLogin(addr string, conf *tls.Config, ip, user, secret string) (string, error) {
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if _, err := br.ReadString('\n'); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(conn, "a1 LOGIN %s %q\r\n", user, secret); err != nil {
		return "", err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(line, "a1 ") {
			return strings.TrimSpace(line), nil
		}
	}
}
