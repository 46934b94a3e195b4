package proxy

import (
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
