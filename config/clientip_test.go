package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
)

func TestClientIPDefaults(t *testing.T) {
	c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(designExample))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ProxyTrustedPrefixes) != 0 || len(c.IDTrustedPrefixes) != 0 {
		t.Errorf("trusted prefixes = %v %v, want none", c.ProxyTrustedPrefixes, c.IDTrustedPrefixes)
	}
	for _, l := range c.Listeners {
		if l.ProxyProtocol {
			t.Errorf("listener %s: proxy_protocol on by default", l.Address)
		}
	}
	eq(t, "forward_client_ip", c.Backend.IMAP.ForwardClientIP, ForwardNone)
}

func TestClientIPKeys(t *testing.T) {
	doc := `proxy_trusted_networks = ["10.0.0.5", "192.0.2.0/24"]
id_trusted_networks = ["2001:db8::/32"]
[[listener]]
protocol = "imap"
address = "127.0.0.1:1143"
tls = "none"
proxy_protocol = true
[[listener]]
protocol = "pop3"
address = "127.0.0.1:1110"
tls = "none"
[[listener]]
protocol = "submission"
address = "127.0.0.1:1587"
tls = "none"
[backend.imap]
address = "127.0.0.1:143"
master_user = "kanmon"
master_password = "pw"
forward_client_ip = "id"
[backend.pop3]
address = "127.0.0.1:110"
master_user = "kanmon"
master_password = "pw"
forward_client_ip = "xclient"
[backend.submission]
address = "127.0.0.1:587"
master_user = "kanmon"
master_password = "pw"
forward_client_ip = "proxy"
`
	c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	wantProxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("192.0.2.0/24")}
	if !slices.Equal(c.ProxyTrustedPrefixes, wantProxy) {
		t.Errorf("ProxyTrustedPrefixes = %v, want %v", c.ProxyTrustedPrefixes, wantProxy)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}; !slices.Equal(c.IDTrustedPrefixes, want) {
		t.Errorf("IDTrustedPrefixes = %v, want %v", c.IDTrustedPrefixes, want)
	}
	if !c.Listeners[0].ProxyProtocol || c.Listeners[1].ProxyProtocol {
		t.Errorf("proxy_protocol = %v %v", c.Listeners[0].ProxyProtocol, c.Listeners[1].ProxyProtocol)
	}
	eq(t, "imap", c.Backend.IMAP.ForwardClientIP, ForwardID)
	eq(t, "pop3", c.Backend.POP3.ForwardClientIP, ForwardXCLIENT)
	eq(t, "submission", c.Backend.Submission.ForwardClientIP, ForwardPROXY)
}

func TestClientIPErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kanmon.toml")
	backend := func(proto, forward string) string {
		return fmt.Sprintf("\n[backend.%s]\naddress = \"127.0.0.1:1\"\nmaster_user = \"k\"\nmaster_password = \"pw\"\nforward_client_ip = %q # <-\n", proto, forward)
	}
	listener := func(proto string) string {
		return fmt.Sprintf("\n[[listener]]\nprotocol = %q\naddress = \"127.0.0.1:1%s\"\ntls = \"none\"\n", proto, proto[:1])
	}
	cases := []struct{ name, doc, want string }{
		{"id on pop3", listener("pop3") + backend("pop3", "id"), `forward_client_ip "id" is for imap only`},
		{"id on submission", listener("submission") + backend("submission", "id"), `forward_client_ip "id" is for imap only`},
		{"xclient on imap", listener("imap") + backend("imap", "xclient"), `forward_client_ip "xclient" is for pop3 and submission`},
		{"unknown mode", listener("imap") + backend("imap", "ID "), `want none, id, xclient or proxy`},
		{"bad proxy network", "proxy_trusted_networks = [\"10.0.0.0/8\", \"lb.example\"] # <-\n" + listener("imap") + backendIMAP,
			`proxy_trusted_networks: "lb.example" is not a CIDR prefix`},
		{"bad id network", "id_trusted_networks = [\"10.0.0.0/33\"] # <-\n" + listener("imap") + backendIMAP,
			`id_trusted_networks: "10.0.0.0/33" is not a CIDR prefix`},
		{"proxy_protocol without trusted", "\n[[listener]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1\"\ntls = \"none\"\nproxy_protocol = true # <-\n" +
			"\n[backend.imap]\naddress = \"127.0.0.1:1\"\nmaster_user = \"k\"\nmaster_password = \"pw\"\n",
			"proxy_protocol needs proxy_trusted_networks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(file, []byte(tc.doc))
			if c != nil {
				t.Error("got a config with the error")
			}
			wantErr(t, err, fmt.Sprintf("%s:%d: ", file, markedLine(t, tc.doc)), tc.want)
		})
	}
}
