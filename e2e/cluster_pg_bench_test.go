package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/accountsdb"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
)

// BenchmarkRevokeLatency measures how long a revocation takes to end a
// live session on another node: three `kanmon serve` nodes behind
// HAProxy, accounts in PostgreSQL. Each round adds a passcode (one
// transaction, as the CLI or the portal makes it), logs in with it
// through HAProxy into IDLE on whichever node HAProxy picks, revokes it,
// and times the revocation's commit to the session's `* BYE`. It reports
// p50 and p99 over the rounds (-benchtime 100x for the 100):
//
//	go test -run '^$' -bench BenchmarkRevokeLatency -benchtime 100x ./e2e
func BenchmarkRevokeLatency(b *testing.B) {
	dc := startDovecot(b, dovecottest.Options{}, "alice")
	c := startPGCluster(b, dc)
	cfg, err := config.Load(c.files[0].ConfigPath)
	if err != nil {
		b.Fatal(err)
	}
	db, err := accountsdb.Open(context.Background(), cfg.AccountsURL, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	store := auth.OpenSharedStore(db)
	conf := c.files[0].ClientTLS
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		app := fmt.Sprintf("app%d", i)
		code, err := auth.AddPasscode(store, cfg.StateDir, "alice", app)
		if err != nil {
			b.Fatal(err)
		}
		c.waitApplied(b, "the new passcode to reach every node")
		s, err := idleSession(c.front, conf, "alice", code)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, _, err := auth.RevokePasscode(store, "alice", app); err != nil {
			b.Fatal(err)
		}
		line, err := s.readUntil("* BYE")
		if err != nil || !strings.HasPrefix(line, revokedByePrefix) {
			b.Fatalf("round %d: %q %v", i, line, err)
		}
		took = append(took, time.Since(start))
		s.conn.Close()
	}
	b.StopTimer()
	slices.Sort(took)
	pc := func(p int) float64 { return float64(took[(len(took)-1)*p/100].Microseconds()) / 1000 }
	b.ReportMetric(pc(50), "revoke-p50-ms")
	b.ReportMetric(pc(99), "revoke-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// rawIdle is a bare IMAP session in IDLE, for a benchmark.
type rawIdle struct {
	conn net.Conn
	br   *bufio.Reader
}

// idleSession logs user in at addr (implicit TLS), selects INBOX and
// enters IDLE.
func idleSession(addr string, conf *tls.Config, user, secret string) (*rawIdle, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.8")}}, "tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	s := &rawIdle{conn: conn, br: bufio.NewReader(conn)}
	steps := []struct{ send, until string }{
		{"", "* OK"},
		{"a1 LOGIN " + user + " " + secret, "a1 OK"},
		{"a2 SELECT INBOX", "a2 OK"},
		{"a3 IDLE", "+ "},
	}
	for _, st := range steps {
		if st.send != "" {
			if _, err := fmt.Fprintf(conn, "%s\r\n", st.send); err != nil {
				conn.Close()
				return nil, err
			}
		}
		if _, err := s.readUntil(st.until); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return s, nil
}

// readUntil reads lines until one starts with prefix, and returns it.
func (s *rawIdle) readUntil(prefix string) (string, error) {
	for {
		l, err := s.br.ReadString('\n')
		if err != nil {
			return "", err
		}
		l = strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(l, prefix) {
			return l, nil
		}
		if strings.HasPrefix(l, "a1 NO") || strings.HasPrefix(l, "a1 BAD") {
			return l, fmt.Errorf("login: %s", l)
		}
	}
}
