package config

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestPortalAbsent(t *testing.T) {
	c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(listener1+backendIMAP))
	if err != nil {
		t.Fatal(err)
	}
	if c.Portal != nil {
		t.Errorf("Portal = %+v, want nil without [portal]", c.Portal)
	}
}

func TestPortalDefaults(t *testing.T) {
	doc := tlsTable + `
[portal]
address = "127.0.0.1:8443"
` + `
[[listener]]
protocol = "imap"
address = "mail.example.edu:993"
` + backendIMAP
	c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Portal
	eq(t, "address", p.Address, "127.0.0.1:8443")
	eq(t, "issuer", p.Issuer, "kanmon")
	eq(t, "mail_host", p.MailHost, "mail.example.edu") // the first listener's host
	eq(t, "session_idle", p.SessionIdle.Duration, 15*time.Minute)
	eq(t, "session_max", p.SessionMax.Duration, 8*time.Hour)
}

func TestPortalKeys(t *testing.T) {
	doc := tlsTable + `
[portal]
address = "0.0.0.0:443"
issuer = "Example University"
mail_host = "mail.example.edu"
session_idle = "5m"
session_max = "1h"
` + `
[[listener]]
protocol = "imap"
address = "0.0.0.0:993"
` + backendIMAP
	c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Portal
	eq(t, "issuer", p.Issuer, "Example University")
	eq(t, "mail_host", p.MailHost, "mail.example.edu")
	eq(t, "session_idle", p.SessionIdle.Duration, 5*time.Minute)
	eq(t, "session_max", p.SessionMax.Duration, time.Hour)
}

// A wildcard listener says nothing about the name users type: the portal
// falls back to the host the browser used, so mail_host stays empty.
func TestPortalMailHostWildcard(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:993", "[::]:993", ":993"} {
		doc := tlsTable + "\n[portal]\naddress = \"127.0.0.1:8443\"\n" +
			fmt.Sprintf("\n[[listener]]\nprotocol = \"imap\"\naddress = %q\n", addr) + backendIMAP
		c, err := Parse(filepath.Join(t.TempDir(), "kanmon.toml"), []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "mail_host for "+addr, c.Portal.MailHost, "")
	}
}

func TestPortalErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kanmon.toml")
	cases := []struct{ name, doc, want string }{
		{"no address", tlsTable + "\n[portal] # <-\nissuer = \"x\"\n" + listener1 + backendIMAP,
			"portal: address is required"},
		{"address without port", tlsTable + "\n[portal]\naddress = \"127.0.0.1\" # <-\n" + listener1 + backendIMAP,
			`portal: address "127.0.0.1": want host:port`},
		{"address of a listener", tlsTable + "\n[portal]\naddress = \"127.0.0.1:1143\" # <-\n" + listener1 + backendIMAP,
			"portal: address 127.0.0.1:1143 is also a [[listener]] address"},
		{"address of metrics", "metrics_address = \"127.0.0.1:9000\"\n" + tlsTable + "\n[portal]\naddress = \"127.0.0.1:9000\" # <-\n" + listener1 + backendIMAP,
			"portal: address 127.0.0.1:9000 is also metrics_address"},
		{"no tls table", "\n[portal] # <-\naddress = \"127.0.0.1:8443\"\n" + listener1 + backendIMAP,
			"[portal] needs [tls] cert and key"},
		{"tls without key", "\n[tls] # <-\ncert = \"cert.pem\"\n\n[portal]\naddress = \"127.0.0.1:8443\"\n" + listener1 + backendIMAP,
			"[portal] needs [tls] cert and key"},
		{"no imap backend", tlsTable + "\n[portal] # <-\naddress = \"127.0.0.1:8443\"\n" + `
[[listener]]
protocol = "pop3"
address = "127.0.0.1:110"
tls = "none"

[backend.pop3]
address = "127.0.0.1:1110"
master_user = "kanmon"
master_password = "pw"
`, "[portal] needs [backend.imap]"},
		{"issuer with colon", tlsTable + "\n[portal]\naddress = \"127.0.0.1:8443\"\nissuer = \"Uni: Mail\" # <-\n" + listener1 + backendIMAP,
			`portal: issuer "Uni: Mail": must not contain a colon`},
		{"mail_host with port", tlsTable + "\n[portal]\naddress = \"127.0.0.1:8443\"\nmail_host = \"mail.example.edu:993\" # <-\n" + listener1 + backendIMAP,
			`portal: mail_host "mail.example.edu:993": want a host name`},
		{"session_idle not a string", tlsTable + "\n[portal]\naddress = \"127.0.0.1:8443\"\nsession_idle = 15 # <-\n" + listener1 + backendIMAP,
			`portal.session_idle: want a duration string such as "60s"`},
		{"negative session_idle", tlsTable + "\n[portal]\naddress = \"127.0.0.1:8443\"\nsession_idle = \"-1m\" # <-\n" + listener1 + backendIMAP,
			"portal: session_idle must be positive"},
		{"session_max below idle", tlsTable + "\n[portal]\naddress = \"127.0.0.1:8443\"\nsession_idle = \"1h\"\nsession_max = \"30m\" # <-\n" + listener1 + backendIMAP,
			"portal: session_max 30m0s is shorter than session_idle 1h0m0s"},
		{"unknown key", tlsTable + "\n[portal]\naddress = \"127.0.0.1:8443\"\ncolour = \"blue\" # <-\n" + listener1 + backendIMAP,
			`unknown key "portal.colour"`},
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
