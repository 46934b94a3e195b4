package proxyproto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// v2Header builds a PROXY v2 header by hand: command byte, family byte,
// and the address block.
func v2Header(cmd, fam byte, block []byte) []byte {
	h := append([]byte(nil), pp.SIGV2...)
	h = append(h, cmd, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(block)))
	return append(h, block...)
}

// v2TCP4 is the address block of 192.0.2.7:40000 → 198.51.100.1:993.
func v2TCP4() []byte {
	b := []byte{192, 0, 2, 7, 198, 51, 100, 1}
	b = binary.BigEndian.AppendUint16(b, 40000)
	return binary.BigEndian.AppendUint16(b, 993)
}

func TestRead(t *testing.T) {
	v6block := append(netip.MustParseAddr("2001:db8::7").AsSlice(), netip.MustParseAddr("2001:db8::1").AsSlice()...)
	v6block = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(v6block, 50000), 143)
	cases := []struct {
		name     string
		header   string
		version  byte
		local    bool
		src, dst string
	}{
		{"v1 tcp4", "PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\r\n", 1, false, "192.0.2.7:40000", "198.51.100.1:993"},
		{"v1 tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 50000 143\r\n", 1, false, "[2001:db8::7]:50000", "[2001:db8::1]:143"},
		{"v1 unknown", "PROXY UNKNOWN\r\n", 1, true, "", ""},
		{"v1 unknown with addresses", "PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n", 1, true, "", ""},
		{"v2 tcp4", string(v2Header(0x21, 0x11, v2TCP4())), 2, false, "192.0.2.7:40000", "198.51.100.1:993"},
		{"v2 tcp6", string(v2Header(0x21, 0x21, v6block)), 2, false, "[2001:db8::7]:50000", "[2001:db8::1]:143"},
		{"v2 tcp4 with TLVs", string(v2Header(0x21, 0x11, append(v2TCP4(), 0x04, 0x00, 0x02, 'o', 'k'))), 2, false, "192.0.2.7:40000", "198.51.100.1:993"},
		{"v2 local", string(v2Header(0x20, 0x00, nil)), 2, true, "", ""},
	}
	const after = "\x16\x03\x01 a ClientHello, or a1 LOGIN\r\n"
	for _, tc := range cases {
		for _, split := range []bool{false, true} {
			name := tc.name
			if split {
				name += " one byte per read"
			}
			t.Run(name, func(t *testing.T) {
				rest := strings.NewReader(tc.header + after)
				var r io.Reader = rest
				if split {
					r = iotest.OneByteReader(rest)
				}
				h, err := Read(r)
				if err != nil {
					t.Fatal(err)
				}
				if h.Version != tc.version || h.Local != tc.local {
					t.Errorf("version %d local %v, want %d %v", h.Version, h.Local, tc.version, tc.local)
				}
				if !tc.local && (h.Source.String() != tc.src || h.Dest.String() != tc.dst) {
					t.Errorf("source %s dest %s, want %s %s", h.Source, h.Dest, tc.src, tc.dst)
				}
				left, _ := io.ReadAll(rest)
				if string(left) != after {
					t.Errorf("bytes after the header: %q, want %q (the reader must not read past the header)", left, after)
				}
			})
		}
	}
}

func TestReadRefuses(t *testing.T) {
	unix := make([]byte, 216)
	cases := []struct {
		name, input string
		want        error // nil: any error
	}{
		{"no header: an IMAP command", "a1 LOGIN carol pw\r\n", ErrMissing},
		{"no header: a TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ErrMissing},
		{"no header: HTTP", "GET / HTTP/1.1\r\n", ErrMissing},
		{"empty", "", io.EOF},
		{"truncated v1", "PROXY TCP4 192.0.2.7", io.ErrUnexpectedEOF},
		{"truncated v2 signature", string(pp.SIGV2[:8]), io.ErrUnexpectedEOF},
		{"truncated v2 block", string(v2Header(0x21, 0x11, v2TCP4()))[:20], io.ErrUnexpectedEOF},
		{"v2-like signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", ErrMissing},
		{"v1 without CR", "PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\n", nil},
		{"v1 bad address", "PROXY TCP4 192.0.2.777 198.51.100.1 40000 993\r\n", nil},
		{"v1 v6 address as TCP4", "PROXY TCP4 2001:db8::7 198.51.100.1 40000 993\r\n", nil},
		{"v1 bad port", "PROXY TCP4 192.0.2.7 198.51.100.1 70000 993\r\n", nil},
		{"v1 injected CR", "PROXY TCP4 192.0.2.7\r 198.51.100.1 40000 993\r\n", nil},
		{"v1 extra field", "PROXY TCP4 192.0.2.7 198.51.100.1 40000 993 x\r\n", nil},
		{"v1 unknown protocol", "PROXY UDP4 192.0.2.7 198.51.100.1 40000 993\r\n", nil},
		{"v1 too long", "PROXY UNKNOWN " + strings.Repeat("f", 120) + "\r\n", pp.ErrVersion1HeaderTooLong},
		{"v2 version 3", string(v2Header(0x31, 0x11, v2TCP4())), nil},
		{"v2 short block", string(v2Header(0x21, 0x11, v2TCP4()[:8])), nil},
		{"v2 udp", string(v2Header(0x21, 0x12, v2TCP4())), ErrTransport},
		{"v2 unix", string(v2Header(0x21, 0x31, unix)), ErrTransport},
		{"v2 proxy unspec", string(v2Header(0x21, 0x00, nil)), nil},
		{"v2 too long", string(v2Header(0x21, 0x11, make([]byte, pp.MaxV2HeaderSize+1))), pp.ErrInvalidLength},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Read(strings.NewReader(tc.input))
			if err == nil {
				t.Fatalf("accepted: %+v", h)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// dialFrom connects to addr from the local address from ("127.0.0.2"):
// every 127/8 address is loopback on Linux.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot connect from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// acceptOne listens on 127.0.0.1, runs send on a connection from from,
// and returns the accepted server side.
func acceptOne(t *testing.T, from string, send func(net.Conn)) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := dialFrom(t, from, ln.Addr().String())
	send(c)
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestAccept(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	ctx := context.Background()

	t.Run("trusted source, header and data in one write", func(t *testing.T) {
		s := acceptOne(t, "127.0.0.1", func(c net.Conn) {
			c.Write([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\r\n\x16\x03\x01hello"))
		})
		client, local, h, err := Accept(ctx, s, trusted, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if client.String() != "192.0.2.7:40000" || local.String() != "198.51.100.1:993" || h.Version != 1 {
			t.Errorf("client %s local %s version %d", client, local, h.Version)
		}
		// The bytes after the header are still in the socket, and the
		// connection is still the bare *net.TCPConn the relay splices.
		if _, ok := s.(*net.TCPConn); !ok {
			t.Fatalf("conn is %T", s)
		}
		buf := make([]byte, 64)
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.ReadAtLeast(s, buf, len("\x16\x03\x01hello"))
		if err != nil || string(buf[:n]) != "\x16\x03\x01hello" {
			t.Errorf("after the header: %q, %v", buf[:n], err)
		}
	})

	t.Run("trusted source, v2 LOCAL keeps the real addresses", func(t *testing.T) {
		s := acceptOne(t, "127.0.0.1", func(c net.Conn) { c.Write(v2Header(0x20, 0x00, nil)) })
		client, local, h, err := Accept(ctx, s, trusted, 5*time.Second)
		if err != nil || !h.Local {
			t.Fatalf("local %v err %v", h.Local, err)
		}
		if client != AddrPort(s.RemoteAddr()) || local != AddrPort(s.LocalAddr()) {
			t.Errorf("client %s local %s, want the connection's", client, local)
		}
	})

	t.Run("untrusted source is refused before any read", func(t *testing.T) {
		s := acceptOne(t, "127.0.0.2", func(c net.Conn) {
			c.Write([]byte("PROXY TCP4 10.1.2.3 198.51.100.1 40000 993\r\n"))
		})
		client, _, _, err := Accept(ctx, s, trusted, 5*time.Second)
		if !errors.Is(err, ErrUntrusted) {
			t.Fatalf("err = %v, want ErrUntrusted", err)
		}
		if client.Addr().String() != "127.0.0.2" {
			t.Errorf("client %s: want the peer", client)
		}
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, _ := io.ReadAll(io.LimitReader(s, 4)); string(line) != "PROX" {
			t.Errorf("the header was read (%q left)", line)
		}
	})

	t.Run("trusted source without a header times out", func(t *testing.T) {
		s := acceptOne(t, "127.0.0.1", func(net.Conn) {})
		start := time.Now()
		_, _, _, err := Accept(ctx, s, trusted, 100*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v", d)
		}
	})

	t.Run("trusted source sending a command instead", func(t *testing.T) {
		s := acceptOne(t, "127.0.0.1", func(c net.Conn) { c.Write([]byte("a1 CAPABILITY\r\n")) })
		if _, _, _, err := Accept(ctx, s, trusted, 5*time.Second); !errors.Is(err, ErrMissing) {
			t.Fatalf("err = %v, want ErrMissing", err)
		}
	})

	t.Run("shutdown interrupts the read", func(t *testing.T) {
		s := acceptOne(t, "127.0.0.1", func(net.Conn) {})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, _, err := Accept(cctx, s, trusted, time.Minute); err == nil {
			t.Fatal("no error after shutdown")
		}
	})
}

// FuzzRead feeds arbitrary bytes to the PROXY header reader:
// it must not panic, must never consume more than the header it accepts
// (re-reading exactly the consumed bytes gives the same header), and an
// accepted non-LOCAL header always names valid addresses.
func FuzzRead(f *testing.F) {
	for _, seed := range []string{
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\r\na1 LOGIN\r\n",
		"PROXY TCP6 2001:db8::7 2001:db8::1 50000 143\r\n",
		"PROXY UNKNOWN\r\n",
		string(v2Header(0x21, 0x11, v2TCP4())) + "\x16\x03\x01",
		string(v2Header(0x20, 0x00, nil)),
		string(v2Header(0x21, 0x11, append(v2TCP4(), 0x04, 0x00, 0x02, 'o', 'k'))),
		"a1 CAPABILITY\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		r := bytes.NewReader(input)
		h, err := Read(r)
		if err != nil {
			return
		}
		consumed := input[:len(input)-r.Len()]
		again, err := Read(bytes.NewReader(consumed))
		if err != nil || again != h {
			t.Fatalf("re-reading the %d consumed bytes: %+v, %v; first %+v", len(consumed), again, err, h)
		}
		if !h.Local && (!h.Source.Addr().IsValid() || !h.Dest.Addr().IsValid()) {
			t.Fatalf("accepted header without addresses: %+v", h)
		}
	})
}
