package proxy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseOriginating(t *testing.T) {
	good := []struct{ ip, port, want string }{
		{"10.1.2.3", "", "10.1.2.3:0"},
		{"10.1.2.3", "40000", "10.1.2.3:40000"},
		{"10.1.2.3", "1", "10.1.2.3:1"},
		{"10.1.2.3", "65535", "10.1.2.3:65535"},
		{"2001:db8::7", "443", "[2001:db8::7]:443"},
		{"::ffff:10.1.2.3", "", "10.1.2.3:0"},
	}
	for _, tc := range good {
		ap, err := parseOriginating(tc.ip, tc.port)
		if err != nil || ap.String() != tc.want {
			t.Errorf("parseOriginating(%q, %q) = %s, %v; want %s", tc.ip, tc.port, ap, err, tc.want)
		}
	}
	bad := []struct{ ip, port string }{
		{"", ""}, {"10.1.2", ""}, {"10.1.2.3 ", ""}, {" 10.1.2.3", ""}, {"10.1.2.3\r\n", ""},
		{"10.1.2.3\x00", ""}, {"fe80::1%eth0", ""}, {"10.1.2.3/8", ""}, {"host.example", ""},
		{"010.1.2.3", ""}, {"10.1.2.3", "0"}, {"10.1.2.3", "65536"}, {"10.1.2.3", "-1"},
		{"10.1.2.3", "+80"}, {"10.1.2.3", "80 "}, {"10.1.2.3", "0x50"}, {"10.1.2.3", "999999"},
		{"10.1.2.3", "80\r\nA1 LOGOUT"},
	}
	for _, tc := range bad {
		if ap, err := parseOriginating(tc.ip, tc.port); err == nil {
			t.Errorf("parseOriginating(%q, %q) = %s, want an error", tc.ip, tc.port, ap)
		}
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
