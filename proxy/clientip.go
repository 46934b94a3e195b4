package proxy

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kanmon-mail/kanmon/internal/lineio"
	"github.com/kanmon-mail/kanmon/internal/proxyproto"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// clientInfo is the session's client as forwarded to the backend.
func (s *session) clientInfo() backend.ClientInfo {
	if !s.clientIP.IsValid() {
		return backend.ClientInfo{Helo: s.helo}
	}
	return backend.ClientInfo{
		Addr:    netip.AddrPortFrom(s.clientIP, s.clientPort),
		Local:   s.localAddr,
		Session: s.id,
		Helo:    s.helo,
	}
}

// setClient makes ap the session's client for every policy and log line
// from here on; the log also names, as via, the host that said so. A
// second call replaces the first.
func (s *session) setClient(ap netip.AddrPort, via string) {
	s.clientIP, s.clientPort = ap.Addr(), ap.Port()
	base := s.baseLog
	if base == nil {
		base = s.log
	}
	s.log = base.With(via, s.connIP.String(), "client", s.clientIP.String())
}

// errOriginating marks an x-originating-ip or -port that is not a bare
// address or a port number.
var errOriginating = errors.New("invalid x-originating-ip or x-originating-port")

// parseOriginating validates the x-originating-ip and x-originating-port
// of an IMAP ID (port may be empty): an IPv4 or IPv6 address without a
// zone, and a decimal port from 1 to 65535.
func parseOriginating(ip, port string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, errOriginating
	}
	var p uint64
	if port != "" {
		if len(port) > 5 || strings.TrimLeft(port, "0123456789") != "" {
			return netip.AddrPort{}, errOriginating
		}
		var err error
		p, err = strconv.ParseUint(port, 10, 32)
		if err != nil || p < 1 || p > 65535 {
			return netip.AddrPort{}, errOriginating
		}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// originatingID applies an IMAP ID's x-originating-ip and -port (either
// may be nil): from a host in id_trusted_networks, before any login on the
// connection, a valid address becomes the client's for every policy
// (trusted_networks, lockout, logs, last use). Anything else is only
// logged: the fields of an untrusted host, an invalid address, an ID after
// a login attempt.
func (f *imapFront) originatingID(ip, port *string) {
	var ipText, portText string
	if ip != nil {
		ipText = *ip
	}
	if port != nil {
		portText = *port
	}
	attrs := []any{"x_originating_ip", lineio.Printable(ipText, 64), "x_originating_port", lineio.Printable(portText, 8)}
	switch {
	case !proxyproto.InPrefixes(f.connIP, f.rt.Config.IDTrustedPrefixes):
		f.log.Info("IMAP ID x-originating-ip ignored: sender not in id_trusted_networks", attrs...)
		return
	case f.loginTried:
		f.log.Warn("IMAP ID x-originating-ip ignored: sent after a login attempt", attrs...)
		return
	}
	ap, err := parseOriginating(ipText, portText)
	if err != nil {
		f.log.Warn("IMAP ID x-originating-ip ignored: "+err.Error(), attrs...)
		return
	}
	f.setClient(ap, "id_from")
	f.log.Info("client address from IMAP ID x-originating-ip")
}
