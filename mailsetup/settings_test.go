package mailsetup

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/config"
)

// fullConfig has every protocol in both TLS modes, a plaintext listener
// that must never be advertised, and a duplicate of 993 on IPv6.
const fullConfig = `
[tls]
cert = "cert.pem"
key = "key.pem"

[portal]
address = "0.0.0.0:443"
issuer = "Example University"
mail_host = "mail.example.edu"

[users]
domains = ["Example.EDU"]

[[listener]]
protocol = "pop3"
address = "0.0.0.0:110"
tls = "starttls"

[[listener]]
protocol = "imap"
address = "127.0.0.1:1143"
tls = "none"

[[listener]]
protocol = "submission"
address = "0.0.0.0:587"
tls = "starttls"

[[listener]]
protocol = "imap"
address = "0.0.0.0:143"
tls = "starttls"

[[listener]]
protocol = "imap"
address = "0.0.0.0:993"

[[listener]]
protocol = "imap"
address = "[::]:993"
tls = "implicit"

[[listener]]
protocol = "pop3"
address = "0.0.0.0:995"
tls = "implicit"

[[listener]]
protocol = "submission"
address = "0.0.0.0:465"
tls = "implicit"

[[listener]]
protocol = "submission"
address = "127.0.0.1:10025"
tls = "none"
` + backends

const backends = `
[backend.imap]
address = "127.0.0.1:11143"
master_user = "kanmon"
master_password = "pw"

[backend.pop3]
address = "127.0.0.1:11110"
master_user = "kanmon"
master_password = "pw"

[backend.submission]
address = "127.0.0.1:11587"
master_user = "kanmon"
master_password = "pw"
`

func parseConfig(t *testing.T, doc string) *config.Config {
	t.Helper()
	c, err := config.Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fullSettings is FromConfig of fullConfig.
func fullSettings(t *testing.T) Settings {
	t.Helper()
	return FromConfig(parseConfig(t, fullConfig), "")
}

func TestFromConfig(t *testing.T) {
	s := fullSettings(t)
	if s.Host != "mail.example.edu" || s.Domain != "example.edu" || s.DisplayName != "Example University" {
		t.Errorf("Host, Domain, DisplayName = %q, %q, %q", s.Host, s.Domain, s.DisplayName)
	}
	if s.UserForm != UserAddress {
		t.Errorf("UserForm = %v, want address with [users] domains", s.UserForm)
	}
	want := []Listener{
		{config.ProtocolPOP3, 110, config.TLSStartTLS},
		{config.ProtocolSubmission, 587, config.TLSStartTLS},
		{config.ProtocolIMAP, 143, config.TLSStartTLS},
		{config.ProtocolIMAP, 993, config.TLSImplicit}, // once, though on two addresses
		{config.ProtocolPOP3, 995, config.TLSImplicit},
		{config.ProtocolSubmission, 465, config.TLSImplicit},
	}
	if !slices.Equal(s.Listeners, want) {
		t.Errorf("Listeners =\n%v\nwant\n%v", s.Listeners, want)
	}
	if got := FromConfig(parseConfig(t, fullConfig), "imap.example.edu").Host; got != "imap.example.edu" {
		t.Errorf("host argument: Host = %q", got)
	}
}

func TestFromConfigNoDomains(t *testing.T) {
	doc := `
[[listener]]
protocol = "imap"
address = "mail.example.edu:993"
tls = "implicit"
[tls]
cert = "c.pem"
key = "k.pem"
` + backends
	s := FromConfig(parseConfig(t, doc), "mail.example.edu")
	if s.UserForm != UserLocalPart || s.Domain != "" || s.DisplayName != config.DefaultPortalIssuer {
		t.Errorf("UserForm, Domain, DisplayName = %v, %q, %q", s.UserForm, s.Domain, s.DisplayName)
	}
	if FromConfig(nil, "h").Host != "h" {
		t.Error("FromConfig(nil) lost the host")
	}
}

func TestUserForm(t *testing.T) {
	for _, tc := range []struct {
		form             UserForm
		placeholder, got string
	}{
		{UserLocalPart, "%EMAILLOCALPART%", "alice"},
		{UserAddress, "%EMAILADDRESS%", "alice@example.edu"},
	} {
		if p := tc.form.Placeholder(); p != tc.placeholder {
			t.Errorf("%v.Placeholder() = %q", tc.form, p)
		}
		if n := tc.form.LoginName("alice@example.edu"); n != tc.got {
			t.Errorf("%v.LoginName() = %q, want %q", tc.form, n, tc.got)
		}
	}
}

func TestOrdered(t *testing.T) {
	s := Settings{Host: "h", Listeners: []Listener{
		{config.ProtocolIMAP, 10143, config.TLSStartTLS},
		{config.ProtocolIMAP, 143, config.TLSStartTLS},
		{config.ProtocolIMAP, 1143, config.TLSNone},
		{config.ProtocolIMAP, 993, config.TLSImplicit},
		{config.ProtocolIMAP, 993, config.TLSImplicit},
	}}
	want := []Listener{
		{config.ProtocolIMAP, 993, config.TLSImplicit},
		{config.ProtocolIMAP, 143, config.TLSStartTLS},
		{config.ProtocolIMAP, 10143, config.TLSStartTLS},
	}
	if got := s.ordered(config.ProtocolIMAP); !slices.Equal(got, want) {
		t.Errorf("ordered = %v, want %v", got, want)
	}
}

func TestCheckSettings(t *testing.T) {
	ok := Listener{config.ProtocolIMAP, 993, config.TLSImplicit}
	for _, tc := range []struct {
		name string
		s    Settings
		want string // "" for valid
	}{
		{"valid", Settings{Host: "mail.example.edu", Domain: "example.edu", Listeners: []Listener{ok}}, ""},
		{"ip host", Settings{Host: "192.0.2.1", Listeners: []Listener{ok}}, ""},
		{"empty host", Settings{Listeners: []Listener{ok}}, "mail host"},
		{"host with port", Settings{Host: "mail.example.edu:993"}, "mail host"},
		{"long host", Settings{Host: strings.Repeat("a.", 127) + "ab"}, "mail host"},
		{"ip domain", Settings{Host: "h", Domain: "192.0.2.1"}, "domain"},
		{"bad domain", Settings{Host: "h", Domain: "-x.example"}, "domain"},
		{"protocol", Settings{Host: "h", Listeners: []Listener{{"smtp", 25, config.TLSStartTLS}}}, "protocol"},
		{"tls", Settings{Host: "h", Listeners: []Listener{{config.ProtocolIMAP, 993, "ssl"}}}, "tls"},
		{"port 0", Settings{Host: "h", Listeners: []Listener{{config.ProtocolIMAP, 0, config.TLSImplicit}}}, "port"},
		{"port 65536", Settings{Host: "h", Listeners: []Listener{{config.ProtocolIMAP, 65536, config.TLSImplicit}}}, "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.check()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("check() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("check() = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestCheckAddress(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"alice@example.edu", true},
		{"Alice.B+tag@Mail.Example.EDU", true},
		{"ålice@example.edu", true},
		{strings.Repeat("a", 64) + "@example.edu", true},
		{"", false},
		{"alice", false},
		{"@example.edu", false},
		{"alice@", false},
		{"a@b@example.edu", false},
		{"alice smith@example.edu", false},
		{"alice\x00@example.edu", false},
		{"alice\u2028@example.edu", false},
		{"alice\u00a0x@example.edu", false},
		{"<alice@example.edu>", false},
		{`"alice"@example.edu`, false},
		{"alice@192.0.2.1", false},
		{"alice@[192.0.2.1]", false},
		{"alice@exa_mple.edu", false},
		{"\xffalice@example.edu", false},
		{strings.Repeat("a", 65) + "@example.edu", false},
		{"a@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + ".f", false},
	} {
		if err := checkAddress(tc.addr); (err == nil) != tc.ok {
			t.Errorf("checkAddress(%q) = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}
