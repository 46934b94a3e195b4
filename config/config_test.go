package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// designExample is the example config of the project's design contract
// ("CLI and config contract": keys may be added, never renamed),
// verbatim. It must keep loading; testdata/kanmon.example.toml is a copy.
const designExample = `state_dir = "state"                   # bbolt database lives here
accounts  = "accounts.toml"           # 2FA accounts and passcode hashes; reloaded on SIGHUP
trusted_networks = ["127.0.0.1/32"]
require_2fa_outside = true

[tls]
cert = "cert.pem"
key  = "key.pem"

[[listener]]
protocol = "imap"                     # imap | pop3 | submission
address  = "127.0.0.1:21993"
tls      = "implicit"                 # implicit | starttls | none

[[listener]]
protocol = "imap"
address  = "127.0.0.1:21143"
tls      = "starttls"

[backend.imap]                        # also [backend.pop3], [backend.submission]
address = "127.0.0.1:11143"
tls = "none"                          # none | starttls | implicit
master_user = "kanmon"
master_password = "master-pw"         # or master_password_file
`

func TestExampleFileIsVerbatim(t *testing.T) {
	data, err := os.ReadFile("../testdata/kanmon.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != designExample {
		t.Fatal("testdata/kanmon.example.toml differs from the design contract example in config_test.go")
	}
}

func TestLoadExample(t *testing.T) {
	c, err := Load("../testdata/kanmon.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("../testdata")
	checkExample(t, c, dir)
}

func TestParseExample(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(filepath.Join(dir, "kanmon.toml"), []byte(designExample))
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, c, dir)
}

func checkExample(t *testing.T, c *Config, dir string) {
	t.Helper()
	eq(t, "StateDir", c.StateDir, filepath.Join(dir, "state"))
	eq(t, "Accounts", c.Accounts, filepath.Join(dir, "accounts.toml"))
	if !slices.Equal(c.TrustedNetworks, []string{"127.0.0.1/32"}) ||
		!slices.Equal(c.TrustedPrefixes, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}) {
		t.Errorf("trusted networks = %v %v", c.TrustedNetworks, c.TrustedPrefixes)
	}
	if c.Require2FAOutside == nil || !*c.Require2FAOutside {
		t.Error("Require2FAOutside: want true")
	}
	eq(t, "PreAuthTimeout", c.PreAuthTimeout.Duration, DefaultPreAuthTimeout)
	eq(t, "IdleTimeout", c.IdleTimeout.Duration, DefaultIdleTimeout)
	eq(t, "LogLevel", c.LogLevel, "info")
	eq(t, "TLS", c.TLS, TLS{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")})
	want := []Listener{
		{Protocol: "imap", Address: "127.0.0.1:21993", TLS: TLSImplicit, Line: 10},
		{Protocol: "imap", Address: "127.0.0.1:21143", TLS: TLSStartTLS, Line: 15},
	}
	if !slices.Equal(c.Listeners, want) {
		t.Errorf("Listeners = %+v, want %+v", c.Listeners, want)
	}
	b := c.Backend.IMAP
	if b == nil {
		t.Fatal("no backend.imap")
	}
	eq(t, "backend", *b, Backend{
		Address:    "127.0.0.1:11143",
		TLS:        TLSNone,
		ServerName: "127.0.0.1",
		MasterUser: "kanmon", MasterPassword: "master-pw",
		Timeout:         Duration{DefaultBackendTimeout},
		ForwardClientIP: ForwardNone,
	})
	if c.Backend.For(ProtocolIMAP) != b || c.Backend.For(ProtocolPOP3) != nil ||
		c.Backend.For(ProtocolSubmission) != nil || c.Backend.For("smtp") != nil {
		t.Error("Backends.For")
	}
	for path, line := range map[string]int{
		"state_dir": 1, "trusted_networks": 3, "trusted_networks[0]": 3,
		"tls": 6, "tls.key": 8, "listener": 10, "listener[0]": 10,
		"listener[1]": 15, "listener[1].address": 17, "listener[1].tls": 18,
		"backend": 20, "backend.imap": 20, "backend.imap.master_password": 24,
		// absent: the nearest enclosing key that is present
		"backend.imap.timeout": 20, "listener[1].proxy": 15, "log_level": 0,
	} {
		eq(t, "Line("+path+")", c.Line(path), line)
	}
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(filepath.Join(dir, "kanmon.toml"), []byte(`
[tls]
cert = "c.pem"
key = "/etc/kanmon/k.pem"

[[listener]]
protocol = "submission"
address = ":587"

[backend.submission]
address = "mail.example.org:25"
master_user = "kanmon"
master_password = "pw"
`))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "StateDir", c.StateDir, filepath.Join(dir, "state"))
	eq(t, "Accounts", c.Accounts, filepath.Join(dir, "accounts.toml"))
	if c.TrustedNetworks != nil || c.TrustedPrefixes != nil {
		t.Errorf("trusted networks = %v %v, want none", c.TrustedNetworks, c.TrustedPrefixes)
	}
	if c.Require2FAOutside == nil || !*c.Require2FAOutside {
		t.Error("Require2FAOutside: want default true")
	}
	eq(t, "PreAuthTimeout", c.PreAuthTimeout.Duration, 60*time.Second)
	eq(t, "IdleTimeout", c.IdleTimeout.Duration, 31*time.Minute)
	eq(t, "LogLevel", c.LogLevel, "info")
	eq(t, "TLS", c.TLS, TLS{Cert: filepath.Join(dir, "c.pem"), Key: "/etc/kanmon/k.pem"})
	eq(t, "listener TLS", c.Listeners[0].TLS, TLSImplicit)
	eq(t, "listener Line", c.Listeners[0].Line, 6)
	b := c.Backend.Submission
	eq(t, "backend TLS", b.TLS, TLSNone)
	eq(t, "ServerName", b.ServerName, "mail.example.org")
	eq(t, "CAFile", b.CAFile, "")
	eq(t, "InsecureSkipVerify", b.InsecureSkipVerify, false)
	eq(t, "MasterPasswordFile", b.MasterPasswordFile, "")
	eq(t, "Timeout", b.Timeout.Duration, 15*time.Second)
}

func TestExplicitValues(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(filepath.Join(dir, "kanmon.toml"), []byte(`
state_dir = "/var/lib/kanmon"
accounts = "etc/accounts.toml"
trusted_networks = ["10.0.0.0/8", "192.168.1.7", "2001:db8::1/48"]
require_2fa_outside = false
preauth_timeout = "90s"
idle_timeout = "1h"
log_level = "debug"

[[listener]]
protocol = "pop3"
address = "127.0.0.1:1110"
tls = "none"

[backend.pop3]
address = "mail.example.org:995"
tls = "implicit"
server_name = "pop.example.org"
ca_file = "ca.pem"
insecure_skip_verify = true
master_user = "kanmon"
master_password = "pw"
timeout = "5s"
`))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "StateDir", c.StateDir, "/var/lib/kanmon")
	eq(t, "Accounts", c.Accounts, filepath.Join(dir, "etc/accounts.toml"))
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.1.7/32"),
		netip.MustParsePrefix("2001:db8::/48"),
	}
	if !slices.Equal(c.TrustedPrefixes, want) {
		t.Errorf("TrustedPrefixes = %v, want %v", c.TrustedPrefixes, want)
	}
	if c.Require2FAOutside == nil || *c.Require2FAOutside {
		t.Error("Require2FAOutside: want false")
	}
	eq(t, "PreAuthTimeout", c.PreAuthTimeout.Duration, 90*time.Second)
	eq(t, "IdleTimeout", c.IdleTimeout.Duration, time.Hour)
	eq(t, "LogLevel", c.LogLevel, "debug")
	eq(t, "TLS", c.TLS, TLS{})
	eq(t, "backend", *c.Backend.POP3, Backend{
		Address: "mail.example.org:995", TLS: TLSImplicit, ServerName: "pop.example.org",
		CAFile: filepath.Join(dir, "ca.pem"), InsecureSkipVerify: true,
		MasterUser: "kanmon", MasterPassword: "pw", Timeout: Duration{5 * time.Second},
		ForwardClientIP: ForwardNone,
	})
}

func TestMasterPasswordFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"pw": "s3cret pw\n", "crlf": "s3cret\r\n", "bare": "s3cret", "empty": "", "newline": "\n"} {
		if err := os.WriteFile(filepath.Join(dir, "secrets", name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "kanmon.toml")
	doc := func(pwfile string) []byte {
		return []byte(`[[listener]]
protocol = "imap"
address = "127.0.0.1:1143"
tls = "none"

[backend.imap]
address = "127.0.0.1:143"
master_user = "kanmon"
master_password_file = "` + pwfile + `"
`)
	}
	for pwfile, want := range map[string]string{
		"secrets/pw": "s3cret pw", "secrets/crlf": "s3cret", "secrets/bare": "s3cret",
		filepath.Join(dir, "secrets/pw"): "s3cret pw",
	} {
		c, err := Parse(file, doc(pwfile))
		if err != nil {
			t.Fatalf("%s: %v", pwfile, err)
		}
		eq(t, pwfile, c.Backend.IMAP.MasterPassword, want)
		eq(t, pwfile, c.Backend.IMAP.MasterPasswordFile, filepath.Join(dir, "secrets", filepath.Base(pwfile)))
	}
	for pwfile, msg := range map[string]string{
		"secrets/empty":   "is empty",
		"secrets/newline": "is empty",
		"secrets/missing": "no such file",
		"secrets":         "is a directory",
	} {
		_, err := Parse(file, doc(pwfile))
		wantErr(t, err, file+":9: backend.imap: master_password_file", msg)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(path)
	wantErr(t, err, path+": ", "no such file")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%v: want errors.Is fs.ErrNotExist", err)
	}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// wantErr checks that err starts with prefix and contains substr.
func wantErr(t *testing.T, err error, prefix, substr string) {
	t.Helper()
	if err == nil {
		t.Errorf("no error, want %q…%q", prefix, substr)
		return
	}
	if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, substr) {
		t.Errorf("error %q\nwant prefix %q and %q", msg, prefix, substr)
	}
}
