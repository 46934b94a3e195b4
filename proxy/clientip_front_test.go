package proxy_test

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/kanmon-mail/kanmon/auth"
)

// dialFrom connects to addr from the local address ip (every 127/8
// address is loopback on Linux).
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: ioTimeout}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	return conn
}

// proxyV1 and proxyV2 are PROXY headers for a client at src (IPv4)
// connecting to 198.51.100.1:993.
func proxyV1(src string) string {
	return "PROXY TCP4 " + src + " 198.51.100.1 40000 993\r\n"
}

func proxyV2(src string) string {
	h := append([]byte(nil), proxyproto.SIGV2...)
	h = append(h, 0x21, 0x11, 0, 12)
	h = append(h, net.ParseIP(src).To4()...)
	h = append(h, 198, 51, 100, 1)
	h = binary.BigEndian.AppendUint16(h, 40000)
	h = binary.BigEndian.AppendUint16(h, 993)
	return string(h)
}

// Roundcube on a host in id_trusted_networks says, with ID, which user's
// address it logs in for: that address is the client's for every policy.
// From any other host the fields change nothing.
func TestIMAPIDOriginatingIP(t *testing.T) {
	campus := []string{"127.0.0.1/32", "10.0.0.0/8"}
	trusting := newWorld(t, worldOptions{trusted: []string{"10.0.0.0/8"}, extra: `id_trusted_networks = ["127.0.0.1/32"]`})
	campusTrusting := newWorld(t, worldOptions{trusted: campus, extra: `id_trusted_networks = ["127.0.0.1/32"]`})
	notTrusting := newWorld(t, worldOptions{trusted: []string{"10.0.0.0/8"}, extra: `id_trusted_networks = ["192.0.2.0/24"]`})
	const id = `C: a0 ID ("name" "Roundcube" "x-originating-ip" "10.1.2.3" "x-originating-port" "51000")`
	for _, tc := range []struct {
		name    string
		w       *world
		steps   []string
		ok      bool
		logPart []string
	}{
		{"trusted webmail, campus user", trusting, []string{id, "S: * ID NIL", "S: a0 OK ID completed."}, true,
			[]string{"msg=\"client address from IMAP ID x-originating-ip\"", "id_from=127.0.0.1 client=10.1.2.3", "client=10.1.2.3 user=carol via=passthrough"}},
		{"trusted webmail, user outside", campusTrusting, []string{
			`C: a0 ID ("x-originating-ip" "203.0.113.5")`, "S: * ID NIL", "S: a0 OK ID completed."}, false,
			[]string{"client=203.0.113.5 user=carol reason=\"" + auth.ReasonOutside.String() + "\""}},
		{"webmail outside id_trusted_networks", notTrusting, []string{id, "S: * ID NIL", "S: a0 OK ID completed."}, false,
			[]string{"ignored: sender not in id_trusted_networks", "x_originating_ip=10.1.2.3", "client=127.0.0.1 user=carol reason=\"" + auth.ReasonOutside.String() + "\""}},
		{"invalid address", trusting, []string{`C: a0 ID ("x-originating-ip" "10.1.2.300")`, "S: * ID NIL", "S: a0 OK ID completed."}, false,
			[]string{"ignored: invalid x-originating-ip", "client=127.0.0.1 user=carol"}},
		{"invalid port", trusting, []string{`C: a0 ID ("x-originating-ip" "10.1.2.3" "x-originating-port" "0")`, "S: * ID NIL", "S: a0 OK ID completed."}, false,
			[]string{"ignored: invalid x-originating-ip", "client=127.0.0.1 user=carol"}},
		{"address in a literal with a line break", trusting, []string{
			"C: a0 ID (\"x-originating-ip\" {10+}\r\n10.1.2.3\r\n)", "S: * ID NIL", "S: a0 OK ID completed."}, false,
			[]string{"ignored: invalid x-originating-ip", "client=127.0.0.1 user=carol"}},
		{"second ID replaces the first", trusting, []string{
			id, "S: * ID NIL", "S: a0 OK ID completed.",
			`C: a0 ID ("x-originating-ip" "203.0.113.9")`, "S: * ID NIL", "S: a0 OK ID completed."}, false,
			[]string{"id_from=127.0.0.1 client=203.0.113.9 user=carol"}},
		{"ID after a login attempt", trusting, []string{
			`C: a0 LOGIN carol wrong`, "S: a0 " + failedReply,
			id, "S: * ID NIL", "S: a0 OK ID completed."}, false,
			[]string{"ignored: sent after a login attempt", "client=127.0.0.1 user=carol"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(tc.w.k.Logs())
			c := dial(t, tc.w.k.IMAPPlain)
			c.run(append([]string{"S: * OK [CAPABILITY ..."}, tc.steps...)...)
			c.run(`C: a1 LOGIN carol "` + carolPW + `"`)
			want := "S: a1 " + failedReply
			if tc.ok {
				want = "S: a1 OK [CAPABILITY ..."
			}
			c.run(want)
			log := tc.w.k.Logs()[before:]
			for _, part := range tc.logPart {
				if !strings.Contains(log, part) {
					t.Errorf("log lacks %q:\n%s", part, log)
				}
			}
			if strings.Contains(log, "id_from=127.0.0.1 id_from=") {
				t.Errorf("a second ID stacked its attribute on the first:\n%s", log)
			}
		})
	}
}

// A proxy_protocol listener takes the client's address from the PROXY
// header of a trusted balancer, refuses everyone else, and still relays
// (the connection stays a bare TCP socket for the splice path).
func TestIMAPProxyProtocolIn(t *testing.T) {
	w := newWorld(t, worldOptions{
		trusted: []string{"10.0.0.0/8"},
		extra:   "proxy_trusted_networks = [\"127.0.0.1/32\"]\npreauth_timeout = \"1s\"",
		listen:  "proxy_protocol = true",
	})
	login := []string{"S: * OK [CAPABILITY ...", `C: a1 LOGIN carol "` + carolPW + `"`}

	t.Run("v1 from a campus client", func(t *testing.T) {
		c := newConv(t, dialFrom(t, "127.0.0.1", w.k.IMAPPlain))
		c.write(proxyV1("10.1.2.3"))
		c.run(append(login, "S: a1 OK [CAPABILITY ...", "C: a2 SELECT INBOX", "S*: a2 OK [READ-WRITE] ...")...)
		wantLog(t, w.k, "proxy=127.0.0.1 proxy_version=1 client=10.1.2.3 user=carol via=passthrough")
	})
	t.Run("v2 from outside, header and command in one write", func(t *testing.T) {
		c := newConv(t, dialFrom(t, "127.0.0.1", w.k.IMAPPlain))
		c.write(proxyV2("203.0.113.5") + "a0 CAPABILITY\r\n")
		c.run("S: * OK [CAPABILITY ...", "S: * CAPABILITY ...", "S: a0 OK CAPABILITY completed.",
			`C: a1 LOGIN carol "`+carolPW+`"`, "S: a1 "+failedReply)
		wantLog(t, w.k, "proxy=127.0.0.1 proxy_version=2 client=203.0.113.5 user=carol reason=\""+auth.ReasonOutside.String()+"\"")
		c.run("C: a2 LOGIN alice "+w.passcode, "S: a2 OK [CAPABILITY ...", "C: a3 NOOP", "S*: a3 OK ...")
	})
	t.Run("v2 over implicit TLS", func(t *testing.T) {
		raw := dialFrom(t, "127.0.0.1", w.k.IMAPS)
		if _, err := raw.Write([]byte(proxyV2("10.7.7.7"))); err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(raw, w.k.ClientTLS)
		c := newConv(t, tc)
		c.run(append(login, "S: a1 OK [CAPABILITY ...")...)
		wantLog(t, w.k, "proxy=127.0.0.1 proxy_version=2 client=10.7.7.7 user=carol via=passthrough")
	})
	for _, hdr := range []struct{ name, header string }{{"v1", proxyV1("10.1.2.3")}, {"v2", proxyV2("10.1.2.3")}} {
		t.Run(hdr.name+" from an untrusted source", func(t *testing.T) {
			c := newConv(t, dialFrom(t, "127.0.0.2", w.k.IMAPPlain))
			c.write(hdr.header)
			c.expectEOF()
			wantLog(t, w.k, "client=127.0.0.2 err=\"source is not in proxy_trusted_networks\"")
		})
	}
	t.Run("trusted source without a header", func(t *testing.T) {
		c := newConv(t, dialFrom(t, "127.0.0.1", w.k.IMAPPlain))
		c.write("a1 LOGIN carol x\r\n")
		c.expectEOF()
		c = newConv(t, dialFrom(t, "127.0.0.1", w.k.IMAPPlain))
		c.expectEOF() // silent: refused at preauth_timeout
		if strings.Count(w.k.Logs(), "PROXY protocol: connection refused") < 4 {
			t.Errorf("refusals not logged:\n%s", w.k.Logs())
		}
		wantLog(t, w.k, "err=\"no PROXY protocol header\"", "i/o timeout")
	})
}
