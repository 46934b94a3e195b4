package e2e

// The apps still sending the account password (issue 16) in a cluster:
// the records live in Redis, so what one node saw, every node shows.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/redistest"
)

// idLoginAt sends ID (name, version) and LOGIN at addr from ip and returns
// the tagged reply of LOGIN.
func idLoginAt(t *testing.T, c *cluster, node int, ip, name, version, user, secret string) string {
	t.Helper()
	f := c.files[node]
	r := dialIMAPSFrom(t, f.IMAPS, f.ClientTLS, ip)
	defer r.conn.Close()
	r.cmd(fmt.Sprintf(`i1 ID ("name" %q "version" %q)`, name, version))
	return r.cmd(fmt.Sprintf("i2 LOGIN %s %q", user, secret))
}

// Thunderbird sends alice's password twice to node 1 and once to node 2:
// `kanmon clients` on node 2 shows one row with count 3, `kanmon stale`
// on node 1 lists alice; once Thunderbird logs in with its passcode on
// node 2, node 1 shows the row gone. carol's passthrough login on node 1
// shows on node 2. Redis holds no secret.
func TestE2EClusterPasswordClients(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	dc := startDovecot(t, dovecottest.Options{}, "alice", "carol")
	c := startCluster(t, dc, clusterOptions{nodes: 2, redis: fmt.Sprintf("url = %q\n", r.URL())})
	for _, node := range []int{0, 0, 1} {
		wantFailed(t, fmt.Sprintf("alice's password on node %d", node+1), idLoginAt(t, c, node, "127.0.0.2", "Thunderbird", "115.0", "alice", alicePassword))
	}
	clients := func(node int, user string) string {
		return mustRun(t, c.bin, "clients", "-config", c.files[node].ConfigPath, user)
	}
	row := func(out string) string {
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "Thunderbird 115.0") {
				return line
			}
		}
		return ""
	}
	waitFor(t, 10*time.Second, "node 2 to show Thunderbird with count 3", func() bool {
		f := strings.Fields(row(clients(1, "alice")))
		return len(f) >= 6 && f[2] == "imap" && f[3] == "127.0.0.2" && f[4] == "3"
	})
	if stale := mustRun(t, c.bin, "stale", "-config", c.files[0].ConfigPath); !strings.Contains(stale, "alice") || strings.Contains(stale, "carol") {
		t.Errorf("kanmon stale on node 1:\n%s", stale)
	}

	wantOK(t, "Thunderbird's passcode on node 2", idLoginAt(t, c, 1, "127.0.0.2", "Thunderbird", "115.0", "alice", c.passcode))
	waitFor(t, 10*time.Second, "node 1 to show the row gone", func() bool { return row(clients(0, "alice")) == "" })

	wantOK(t, "carol's password on node 1", idLoginAt(t, c, 0, "127.0.0.1", "Evolution", "3.46", "carol", carolPassword))
	waitFor(t, 10*time.Second, "node 2 to show carol's app", func() bool {
		out := clients(1, "carol")
		_, password, _ := strings.Cut(out, "signed in with the account password")
		return strings.Contains(password, "Evolution 3.46")
	})

	rc := r.Client(t)
	keys, err := rc.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	for _, k := range keys {
		if !strings.Contains(k, "{c}") {
			continue
		}
		seen++
		v, err := rc.Dump(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{alicePassword, carolPassword, c.passcode} {
			if strings.Contains(v, s) || strings.Contains(k, s) {
				t.Errorf("Redis key %s holds a secret (%d characters)", k, len(s))
			}
		}
	}
	if seen == 0 {
		t.Error("no {c} key in Redis: the records are not kept there")
	}
}
