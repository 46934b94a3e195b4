package backend

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/proxyproto"
)

// TestProxyV2HeaderRoundTrip writes the header a backend gets with
// forward_client_ip = "proxy" and reads it back with kanmon's own PROXY
// reader, as a kanmon behind another kanmon would.
func TestProxyV2HeaderRoundTrip(t *testing.T) {
	cases := []struct{ client, local, wantSrc, wantDst string }{
		{"192.0.2.7:40000", "198.51.100.1:993", "192.0.2.7:40000", "198.51.100.1:993"},
		{"[2001:db8::7]:50000", "[2001:db8::1]:143", "[2001:db8::7]:50000", "[2001:db8::1]:143"},
		// Mixed families go out as IPv6; the IPv4 side comes back unmapped.
		{"192.0.2.7:40000", "[2001:db8::1]:143", "192.0.2.7:40000", "[2001:db8::1]:143"},
		{"192.0.2.7:0", "", "192.0.2.7:0", "0.0.0.0:0"},
	}
	for _, tc := range cases {
		c := ClientInfo{Addr: netip.MustParseAddrPort(tc.client)}
		if tc.local != "" {
			c.Local = netip.MustParseAddrPort(tc.local)
		}
		raw, err := proxyV2Header(c)
		if err != nil {
			t.Fatalf("%s: %v", tc.client, err)
		}
		h, err := proxyproto.Read(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: reading back: %v", tc.client, err)
		}
		if h.Version != 2 || h.Local || h.Source.String() != tc.wantSrc || h.Dest.String() != tc.wantDst {
			t.Errorf("%s → %s: got %+v", tc.client, tc.local, h)
		}
	}
	raw, err := proxyV2Header(ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := proxyproto.Read(bytes.NewReader(raw)); err != nil || !h.Local {
		t.Errorf("unknown client: %+v %v, want a LOCAL header", h, err)
	}
}
