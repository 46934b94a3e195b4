// Package proxyproto reads the PROXY protocol header (v1 and v2, HAProxy's
// proxy-protocol.txt) that a trusted load balancer sends ahead of a
// client's connection, without reading a byte past it. go-proxyproto
// parses the header; this package decides how much to read, and who may
// send one.
package proxyproto

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// PROXY protocol sizes (HAProxy's proxy-protocol.txt, §2.1 and §2.2).
const (
	// proxyV1MaxLen is the longest v1 line, CRLF included.
	proxyV1MaxLen = 107
	// proxyV2FixedLen is the v2 signature (12), version/command, family
	// and the 16-bit length of what follows.
	proxyV2FixedLen = 16
)

// Errors of the PROXY protocol reader. The connection is refused on each.
var (
	// ErrUntrusted: the connection's source is not in
	// proxy_trusted_networks.
	ErrUntrusted = errors.New("source is not in proxy_trusted_networks")
	// ErrMissing: the first bytes are not a PROXY signature.
	ErrMissing = errors.New("no PROXY protocol header")
	// ErrTransport: the header names something other than TCP.
	ErrTransport = errors.New("PROXY header is not for TCP over IPv4 or IPv6")
)

// Header is what a PROXY header says about a connection.
type Header struct {
	// Version is 1 or 2.
	Version byte
	// Local is true for a v2 LOCAL or a v1 UNKNOWN header: the balancer's
	// own connection (a health check), whose addresses are the real ones.
	Local bool
	// Source is the client's address and Dest the one it connected to;
	// zero when Local.
	Source, Dest netip.AddrPort
}

// Read reads one PROXY protocol v1 or v2 header from r and
// never a byte past it: a v2 header is read by its length field and a v1
// line byte by byte up to its LF, so whatever follows (a TLS ClientHello,
// the client's first command) stays unread in r, and r can be a bare
// *net.TCPConn that the relay later splices. A header split across reads
// is fine. The header bytes are then parsed by go-pp.
func Read(r io.Reader) (Header, error) {
	raw := make([]byte, 5, proxyV1MaxLen)
	if _, err := io.ReadFull(r, raw); err != nil {
		return Header{}, fmt.Errorf("reading PROXY header: %w", err)
	}
	switch {
	case bytes.Equal(raw, pp.SIGV1):
		var b [1]byte
		for raw[len(raw)-1] != '\n' {
			if len(raw) == proxyV1MaxLen {
				return Header{}, pp.ErrVersion1HeaderTooLong
			}
			if _, err := io.ReadFull(r, b[:]); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return Header{}, fmt.Errorf("reading PROXY v1 header: %w", err)
			}
			raw = append(raw, b[0])
		}
	case bytes.Equal(raw, pp.SIGV2[:5]):
		raw = raw[:proxyV2FixedLen]
		if _, err := io.ReadFull(r, raw[5:]); err != nil {
			return Header{}, fmt.Errorf("reading PROXY v2 header: %w", err)
		}
		if !bytes.Equal(raw[:12], pp.SIGV2) {
			return Header{}, ErrMissing
		}
		n := binary.BigEndian.Uint16(raw[14:16])
		if n > pp.MaxV2HeaderSize {
			return Header{}, pp.ErrInvalidLength
		}
		raw = append(raw, make([]byte, n)...)
		if _, err := io.ReadFull(r, raw[proxyV2FixedLen:]); err != nil {
			return Header{}, fmt.Errorf("reading PROXY v2 addresses: %w", err)
		}
	default:
		return Header{}, ErrMissing
	}
	// The buffer holds the whole header, which go-proxyproto's v1 parser
	// insists on (it refuses a line it cannot read at once).
	h, err := pp.Read(bufio.NewReaderSize(bytes.NewReader(raw), max(len(raw), 16)))
	if err != nil {
		return Header{}, err
	}
	ph := Header{Version: h.Version}
	if h.Command.IsLocal() {
		ph.Local = true
		return ph, nil
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		return Header{}, ErrTransport
	}
	ph.Source = unmapAddrPort(src.AddrPort())
	ph.Dest = unmapAddrPort(dst.AddrPort())
	if !ph.Source.Addr().IsValid() || !ph.Dest.Addr().IsValid() {
		return Header{}, ErrTransport
	}
	return ph, nil
}

// Accept runs a proxy_protocol listener's admission: a source outside
// trusted is refused before anything is read, and a trusted one must send
// a valid header within timeout. It returns the client's address and the
// address it connected to, from the header; for a LOCAL header, the
// connection's own. ctx ending interrupts the read.
func Accept(ctx context.Context, conn net.Conn, trusted []netip.Prefix, timeout time.Duration) (client, local netip.AddrPort, h Header, err error) {
	client, local = AddrPort(conn.RemoteAddr()), AddrPort(conn.LocalAddr())
	if !InPrefixes(client.Addr(), trusted) {
		return client, local, h, ErrUntrusted
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	if ctx.Err() != nil {
		_ = conn.SetReadDeadline(time.Now())
	}
	h, err = Read(conn)
	if err != nil {
		return client, local, h, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	if ctx.Err() != nil { // shutdown began during the read: keep it interrupted
		_ = conn.SetReadDeadline(time.Now())
	}
	if h.Local {
		return client, local, h, nil
	}
	return h.Source, h.Dest, h, nil
}

// addrPort is a TCP address as a netip.AddrPort, IPv4-mapped addresses
// unmapped; zero when it is not one.
func AddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return unmapAddrPort(ta.AddrPort())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return unmapAddrPort(ap)
}

// unmapAddrPort unmaps an IPv4-mapped address and drops any zone.
func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// InPrefixes reports whether a, unmapped, is in one of prefixes.
func InPrefixes(a netip.Addr, prefixes []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
