package backend

import (
	"bytes"
	"net/netip"
	"strings"
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

func TestForwardCommands(t *testing.T) {
	v4 := ClientInfo{
		Addr:    netip.MustParseAddrPort("192.0.2.7:40000"),
		Local:   netip.MustParseAddrPort("198.51.100.1:993"),
		Session: "0a1b2c3d4e5f",
	}
	want := `k3 ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "40000" "x-connected-ip" "198.51.100.1" "x-connected-port" "993" "x-session-id" "0a1b2c3d4e5f")`
	if got := imapForwardID("k3", v4); got != want {
		t.Errorf("ID:\n got %s\nwant %s", got, want)
	}
	if got, want := xclientCommand(v4, false), "XCLIENT ADDR=192.0.2.7 PORT=40000 SESSION=0a1b2c3d4e5f"; got != want {
		t.Errorf("XCLIENT: %q, want %q", got, want)
	}

	v6 := ClientInfo{Addr: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::7%eth0"), 0), Session: "bad id\r\n"}
	if got, want := imapForwardID("k3", v6), `k3 ID ("x-originating-ip" "2001:db8::7")`; got != want {
		t.Errorf("ID v6: %q, want %q", got, want)
	}
	if got, want := xclientCommand(v6, false), "XCLIENT ADDR=2001:db8::7"; got != want {
		t.Errorf("XCLIENT v6: %q, want %q", got, want)
	}
	if got, want := xclientCommand(v6, true), "XCLIENT ADDR=IPV6:2001:db8::7"; got != want {
		t.Errorf("XCLIENT v6 (Postfix): %q, want %q", got, want)
	}
	mapped := ClientInfo{Addr: netip.MustParseAddrPort("[::ffff:192.0.2.7]:1")}
	if got, want := xclientCommand(mapped, true), "XCLIENT ADDR=192.0.2.7 PORT=1"; got != want {
		t.Errorf("XCLIENT mapped: %q, want %q", got, want)
	}

	if imapForwardID("k3", ClientInfo{}) != "" || xclientCommand(ClientInfo{}, false) != "" {
		t.Error("an unknown client must forward nothing")
	}
	for _, id := range []string{"", strings.Repeat("a", 65), "a b", "a\x00", "a\"b", "é"} {
		if forwardSession(ClientInfo{Session: id}) != "" {
			t.Errorf("session id %q forwarded", id)
		}
	}
}
