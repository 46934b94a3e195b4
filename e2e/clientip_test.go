package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Real client IPs against the real Dovecot: PROXY v1/v2 and IMAP ID
// x-originating-ip coming in, ID, XCLIENT and PROXY v2 going out. Dovecot
// trusts loopback (login_trusted_networks = 127.0.0.0/8), so its log line
// "Login: user=<…>, method=PLAIN, rip=…" shows the address kanmon
// forwarded. Clients connect from 127.0.0.1 (the balancer, the webmail
// host) or from 127.0.0.2 (anyone else).

// startClientIPWorld starts a Dovecot that honours forwarded addresses
// and a kanmon with IMAP and POP3 in front of it: of Dovecot's plain
// listeners, or with haproxy of its PROXY protocol ones.
func startClientIPWorld(t *testing.T, haproxy bool, opts kanmontest.Options) *world {
	t.Helper()
	dc := startDovecot(t, dovecottest.Options{
		LoginTrustedNetworks: []string{"127.0.0.0/8"},
		HAProxy:              haproxy,
	}, "alice", "carol")
	opts.IMAPBackend, opts.POP3Backend = dc.IMAPAddr, dc.POP3Addr
	if haproxy {
		opts.IMAPBackend, opts.POP3Backend = dc.IMAPHAProxyAddr, dc.POP3HAProxyAddr
	}
	opts.MasterUser, opts.MasterPassword = masterUser, masterPassword
	opts.Passcodes = map[string][]string{"alice": {"Thunderbird"}}
	return &world{dovecot: dc, kanmon: kanmontest.Start(t, opts)}
}

// proxyHeader is a PROXY header of version for a client at src
// connecting to dst, written by go-proxyproto as a balancer would.
func proxyHeader(t *testing.T, version byte, src, dst string) []byte {
	t.Helper()
	s, _ := net.ResolveTCPAddr("tcp", src)
	d, _ := net.ResolveTCPAddr("tcp", dst)
	b, err := proxyproto.HeaderProxyFromAddrs(version, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialTLSFrom connects to an implicit-TLS listener from the local address
// from, writes header first (nil: none) and does the TLS handshake. It
// returns the handshake's error instead of failing.
func dialTLSFrom(t *testing.T, addr, from string, header []byte, conf *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(20 * time.Second))
	if header != nil {
		if _, err := raw.Write(header); err != nil {
			return nil, err
		}
	}
	tc := tls.Client(raw, conf)
	return tc, tc.Handshake()
}

// lineFrom is dialTLSFrom for a line client: it fails the test when the
// handshake does.
func lineFrom(t *testing.T, addr, from string, header []byte, conf *tls.Config) lineConn {
	t.Helper()
	tc, err := dialTLSFrom(t, addr, from, header, conf)
	if err != nil {
		t.Fatalf("TLS from %s: %v", from, err)
	}
	return newLineConn(t, tc)
}

// imapVia is an IMAP client on kanmon's IMAPS listener from from, behind
// header (nil: none). It fails the test when there is no greeting.
func imapVia(t *testing.T, k *kanmontest.Kanmon, from string, header []byte) *rawIMAP {
	t.Helper()
	r := &rawIMAP{lineFrom(t, k.IMAPS, from, header, k.ClientTLS)}
	r.greeting("* OK ")
	return r
}

// pop3Via is imapVia for POP3S.
func pop3Via(t *testing.T, k *kanmontest.Kanmon, from string, header []byte) *rawPOP3 {
	t.Helper()
	p := &rawPOP3{lineFrom(t, k.POP3S, from, header, k.ClientTLS)}
	p.greeting("+OK ")
	return p
}

// wantDovecotLogin waits for Dovecot's login line of user from rip.
func wantDovecotLogin(t *testing.T, w *world, proto, user, rip string) {
	t.Helper()
	want := fmt.Sprintf("%s-login: Info: Login: user=<%s>, method=PLAIN, rip=%s,", proto, user, rip)
	waitFor(t, 5*time.Second, want, func() bool { return strings.Contains(w.dovecot.Log(), want) })
}

// wantKanmonLog fails unless kanmon's log holds every part.
func wantKanmonLog(t *testing.T, w *world, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(w.kanmon.Logs(), p) {
			t.Errorf("kanmon log lacks %q", p)
		}
	}
}

// wantLastUse fails unless kanmon has recorded a passcode use by
// want.User from want.ClientIP, and with want.Client when that is set.
func wantLastUse(t *testing.T, k *kanmontest.Kanmon, want auth.LastUse) {
	t.Helper()
	uses, err := k.Server.LastUse()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range uses {
		if u.User == want.User && u.ClientIP == want.ClientIP && (want.Client == "" || u.Client == want.Client) {
			return
		}
	}
	t.Errorf("passcode last use %+v, want %s from %s (client %q)", uses, want.User, want.ClientIP, want.Client)
}

var outsideReason = `reason="` + auth.ReasonOutside.String() + `"`

// A balancer in proxy_trusted_networks puts the client's address in a
// PROXY header; kanmon decides by it and tells Dovecot (ID for IMAP,
// XCLIENT for POP3). Nobody else may connect to that listener.
func TestE2EProxyProtocolIn(t *testing.T) {
	w := startClientIPWorld(t, false, kanmontest.Options{
		TrustedNetworks:  []string{"10.0.0.0/8"},
		ListenerExtra:    "proxy_protocol = true",
		Extra:            `proxy_trusted_networks = ["127.0.0.1/32"]`,
		BackendExtra:     `forward_client_ip = "id"`,
		POP3BackendExtra: `forward_client_ip = "xclient"`,
	})
	k := w.kanmon
	passcode := k.Passcode("alice", "Thunderbird")

	t.Run("v1 from the balancer, campus client", func(t *testing.T) {
		r := imapVia(t, k, "127.0.0.1", proxyHeader(t, 1, "10.1.2.3:40000", "198.51.100.1:993"))
		wantOK(t, "carol from 10.1.2.3", r.cmd(fmt.Sprintf("a1 LOGIN carol %q", carolPassword)))
		if got := r.cmd("a2 SELECT INBOX"); !strings.HasPrefix(got, "OK ") {
			t.Fatalf("SELECT: %s", got)
		}
		wantDovecotLogin(t, w, "imap", "carol", "10.1.2.3, lip=198.51.100.1")
		wantKanmonLog(t, w, "proxy=127.0.0.1 proxy_version=1 client=10.1.2.3 user=carol via=passthrough")
	})
	t.Run("v2 from the balancer, client outside", func(t *testing.T) {
		r := imapVia(t, k, "127.0.0.1", proxyHeader(t, 2, "203.0.113.50:40001", "198.51.100.1:993"))
		wantFailed(t, "carol from 203.0.113.50", r.cmd(fmt.Sprintf("a1 LOGIN carol %q", carolPassword)))
		wantKanmonLog(t, w, "proxy_version=2 client=203.0.113.50 user=carol "+outsideReason)
		wantOK(t, "alice's passcode from 203.0.113.50", r.cmd("a2 LOGIN alice "+passcode))
		wantDovecotLogin(t, w, "imap", "alice", "203.0.113.50")
		wantLastUse(t, k, auth.LastUse{User: "alice", ClientIP: "203.0.113.50"})
	})
	t.Run("v2 POP3 from the balancer, forwarded with XCLIENT", func(t *testing.T) {
		p := pop3Via(t, k, "127.0.0.1", proxyHeader(t, 2, "10.2.2.2:40002", "198.51.100.1:995"))
		if got := p.login("carol", carolPassword); !strings.HasPrefix(got, "+OK") {
			t.Fatalf("carol from 10.2.2.2: %s", got)
		}
		p.ok("STAT")
		wantDovecotLogin(t, w, "pop3", "carol", "10.2.2.2")
		// Dovecot names the session as kanmon does.
		m := regexp.MustCompile(`session=([0-9a-f]{12}) proxy=127\.0\.0\.1 proxy_version=2 client=10\.2\.2\.2 user=carol`).FindStringSubmatch(k.Logs())
		if m == nil {
			t.Fatal("no kanmon login line for carol from 10.2.2.2")
		}
		if !strings.Contains(w.dovecot.Log(), "rip=10.2.2.2") || !strings.Contains(w.dovecot.Log(), "session=<"+m[1]+">") {
			t.Errorf("Dovecot log lacks session=<%s>", m[1])
		}
	})
	for _, version := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d from an untrusted source", version), func(t *testing.T) {
			before := strings.Count(k.Logs(), "client=127.0.0.2 err=\"source is not in proxy_trusted_networks\"")
			if _, err := dialTLSFrom(t, k.IMAPS, "127.0.0.2", proxyHeader(t, version, "10.6.6.6:40003", "198.51.100.1:993"), k.ClientTLS); err == nil {
				t.Fatal("TLS handshake succeeded from an untrusted source")
			}
			waitFor(t, 5*time.Second, "the refusal in kanmon's log", func() bool {
				return strings.Count(k.Logs(), "client=127.0.0.2 err=\"source is not in proxy_trusted_networks\"") > before
			})
			if strings.Contains(w.dovecot.Log(), "10.6.6.6") {
				t.Error("Dovecot heard of the untrusted header's address")
			}
		})
	}
	t.Run("trusted source without a header", func(t *testing.T) {
		if _, err := dialTLSFrom(t, k.IMAPS, "127.0.0.1", nil, k.ClientTLS); err == nil {
			t.Fatal("TLS handshake succeeded without a PROXY header")
		}
		waitFor(t, 5*time.Second, "the refusal in kanmon's log", func() bool {
			return strings.Contains(k.Logs(), `err="no PROXY protocol header"`)
		})
	})
}

// Roundcube on the campus web server (in id_trusted_networks) tells
// kanmon, with ID, where its user is; kanmon decides by that address and
// forwards it to Dovecot. The same ID from another host changes nothing.
func TestE2EIDOriginatingIP(t *testing.T) {
	w := startClientIPWorld(t, false, kanmontest.Options{
		TrustedNetworks: []string{"10.0.0.0/8"},
		Extra:           `id_trusted_networks = ["127.0.0.1/32"]`,
		BackendExtra:    `forward_client_ip = "id"`,
	})
	k := w.kanmon
	id := func(ip string) string {
		return fmt.Sprintf(`a0 ID ("name" "Roundcube" "version" "1.6" "x-originating-ip" %q "x-originating-port" "51000")`, ip)
	}

	t.Run("webmail host trusted, campus user", func(t *testing.T) {
		r := imapVia(t, k, "127.0.0.1", nil)
		wantOK(t, "ID", r.cmd(id("10.1.2.3")))
		wantOK(t, "carol via webmail from 10.1.2.3", r.cmd(fmt.Sprintf("a1 LOGIN carol %q", carolPassword)))
		wantDovecotLogin(t, w, "imap", "carol", "10.1.2.3")
		wantKanmonLog(t, w, "client address from IMAP ID", "id_from=127.0.0.1 client=10.1.2.3 user=carol via=passthrough")
	})
	t.Run("same ID from an untrusted host", func(t *testing.T) {
		r := imapVia(t, k, "127.0.0.2", nil)
		wantOK(t, "ID", r.cmd(id("10.1.2.4")))
		wantFailed(t, "carol from 127.0.0.2 claiming 10.1.2.4", r.cmd(fmt.Sprintf("a1 LOGIN carol %q", carolPassword)))
		wantKanmonLog(t, w, "ignored: sender not in id_trusted_networks", "x_originating_ip=10.1.2.4",
			"client=127.0.0.2 user=carol "+outsideReason)
		if strings.Contains(w.dovecot.Log(), "10.1.2.4") {
			t.Error("the untrusted host's claim reached Dovecot")
		}
	})
	t.Run("webmail host trusted, user outside", func(t *testing.T) {
		r := imapVia(t, k, "127.0.0.1", nil)
		wantOK(t, "ID", r.cmd(id("198.51.100.7")))
		wantFailed(t, "carol via webmail from 198.51.100.7", r.cmd(fmt.Sprintf("a1 LOGIN carol %q", carolPassword)))
		wantKanmonLog(t, w, "id_from=127.0.0.1 client=198.51.100.7 user=carol "+outsideReason)
		wantOK(t, "alice's passcode via webmail", r.cmd("a2 LOGIN alice "+k.Passcode("alice", "Thunderbird")))
		wantDovecotLogin(t, w, "imap", "alice", "198.51.100.7")
		wantLastUse(t, k, auth.LastUse{User: "alice", ClientIP: "198.51.100.7", Client: "Roundcube 1.6"})
	})
}

// With forward_client_ip = "proxy", kanmon opens every backend connection
// with a PROXY v2 header; Dovecot's haproxy listeners take the address
// from it.
func TestE2EProxyProtocolOut(t *testing.T) {
	w := startClientIPWorld(t, true, kanmontest.Options{
		BackendExtra:     `forward_client_ip = "proxy"`,
		POP3BackendExtra: `forward_client_ip = "proxy"`,
	})
	k := w.kanmon
	r := imapVia(t, k, "127.0.0.2", nil)
	wantOK(t, "alice over IMAP from 127.0.0.2", r.cmd("a1 LOGIN alice "+k.Passcode("alice", "Thunderbird")))
	if got := r.cmd("a2 SELECT INBOX"); !strings.HasPrefix(got, "OK ") {
		t.Fatalf("SELECT: %s", got)
	}
	wantDovecotLogin(t, w, "imap", "alice", "127.0.0.2")
	p := pop3Via(t, k, "127.0.0.3", nil)
	if got := p.login("alice", k.Passcode("alice", "Thunderbird")); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("alice over POP3 from 127.0.0.3: %s", got)
	}
	p.ok("STAT")
	wantDovecotLogin(t, w, "pop3", "alice", "127.0.0.3")
}
