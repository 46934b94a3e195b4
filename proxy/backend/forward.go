package backend

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pires/go-proxyproto"

	"github.com/kanmon-mail/kanmon/config"
)

// ClientInfo is what kanmon may tell a backend about the client it logs in
// for (forward_client_ip). Only parsed addresses, a port number and a
// checked session id are ever formatted from it, so nothing a client sent
// reaches the backend as text.
type ClientInfo struct {
	// Addr is the client's address and port (port 0 when unknown). The
	// zero value means unknown: then nothing is forwarded.
	Addr netip.AddrPort
	// Local is the address the client connected to; zero when unknown.
	Local netip.AddrPort
	// Session is kanmon's session id, forwarded where the backend takes
	// one so that both logs name the same session. It is dropped unless
	// it is 1–64 letters, digits, '-' or '_'.
	Session string
	// Helo is the client's EHLO or HELO name, which a submission backend
	// gets in kanmon's EHLO; only a valid one (ValidHeloName) is used,
	// else kanmon's own (Hostname).
	Helo string
}

// forwardAddr is an address as forwarded: unmapped, without a zone.
func forwardAddr(a netip.Addr) string { return a.Unmap().WithZone("").String() }

// forwardSession is c.Session when it is safe to send, else "".
func forwardSession(c ClientInfo) string {
	s := c.Session
	if len(s) == 0 || len(s) > 64 {
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return ""
		}
	}
	return s
}

// imapForwardID is the IMAP ID command (RFC 2971) carrying the client's
// address the way Dovecot (login_trusted_networks) and Zimbra read it:
// x-originating-ip/-port, x-connected-ip/-port and x-session-id. It is ""
// when the client is unknown.
func imapForwardID(tag string, c ClientInfo) string {
	if !c.Addr.Addr().IsValid() {
		return ""
	}
	var b strings.Builder
	field := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		// Both are known to be bare tokens: no quoting needed inside.
		b.WriteString(`"` + k + `" "` + v + `"`)
	}
	field("x-originating-ip", forwardAddr(c.Addr.Addr()))
	if p := c.Addr.Port(); p != 0 {
		field("x-originating-port", strconv.Itoa(int(p)))
	}
	if c.Local.Addr().IsValid() {
		field("x-connected-ip", forwardAddr(c.Local.Addr()))
		if p := c.Local.Port(); p != 0 {
			field("x-connected-port", strconv.Itoa(int(p)))
		}
	}
	if id := forwardSession(c); id != "" {
		field("x-session-id", id)
	}
	return tag + " ID (" + b.String() + ")"
}

// xclientCommand is the XCLIENT command carrying the client's address and
// port, as Dovecot's pop3-login takes it from login_trusted_networks:
// "XCLIENT ADDR=192.0.2.7 PORT=40000 SESSION=id". Postfix wants an
// "IPV6:" prefix on IPv6 addresses (ipv6Prefix). It is "" when the client
// is unknown.
func xclientCommand(c ClientInfo, ipv6Prefix bool) string {
	a := c.Addr.Addr()
	if !a.IsValid() {
		return ""
	}
	addr := forwardAddr(a)
	if ipv6Prefix && a.Unmap().Is6() {
		addr = "IPV6:" + addr
	}
	cmd := "XCLIENT ADDR=" + addr
	if p := c.Addr.Port(); p != 0 {
		cmd += " PORT=" + strconv.Itoa(int(p))
	}
	if id := forwardSession(c); id != "" {
		cmd += " SESSION=" + id
	}
	return cmd
}

// proxyV2Header is the PROXY protocol v2 header for c, written first on a
// backend connection with forward_client_ip = "proxy". An unknown client
// gets a LOCAL header: the backend then uses kanmon's own address.
func proxyV2Header(c ClientInfo) ([]byte, error) {
	src, dst := c.Addr, c.Local
	if !src.Addr().IsValid() {
		return (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	}
	if !dst.Addr().IsValid() {
		// The header needs one: an unspecified address of the same
		// family says "not known".
		dst = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		if src.Addr().Is6() {
			dst = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
	}
	tcp := func(ap netip.AddrPort) *net.TCPAddr {
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()))
	}
	return proxyproto.HeaderProxyFromAddrs(2, tcp(src), tcp(dst)).Format()
}

// forwardMode is the backend's forward_client_ip, "" read as none.
func (b *Backend) forwardMode() string {
	if b.ForwardClientIP == "" {
		return config.ForwardNone
	}
	return b.ForwardClientIP
}
