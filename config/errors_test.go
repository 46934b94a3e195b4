package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Pieces of valid config for the error cases below.
const (
	listener1 = `
[[listener]]
protocol = "imap"
address = "127.0.0.1:1143"
tls = "none"
`
	listener2 = `
[[listener]]
protocol = "imap"
address = "127.0.0.1:2143"
tls = "none"
`
	backendIMAP = `
[backend.imap]
address = "127.0.0.1:143"
master_user = "kanmon"
master_password = "pw"
`
	tlsTable = `
[tls]
cert = "cert.pem"
key = "key.pem"
`
)

// errorCases are documents with one mistake each, on the line marked "# <-"
// (or on line, when the mark cannot go there). The error must start with
// "file:line: " and contain want.
var errorCases = []struct {
	name string
	doc  string
	line int
	want string
}{
	{name: "unknown top-level key", doc: `
state_dir = "state"
colour = "blue" # <-
` + listener1 + backendIMAP, want: `unknown key "colour"`},

	{name: "unknown key in tls", doc: listener1 + `
[tls]
cert = "cert.pem"
key = "key.pem"
chain = "chain.pem" # <-
` + backendIMAP, want: `unknown key "tls.chain"`},

	{name: "unknown key in second listener", doc: listener1 + `
[[listener]]
protocol = "imap"
address = "127.0.0.1:2143"
proxy_protocl = true # <-
tls = "none"
` + backendIMAP, want: `unknown key "listener.proxy_protocl"`},

	{name: "unknown key in backend.imap", doc: listener1 + `
[backend.imap]
address = "127.0.0.1:143"
master_user = "kanmon"
master_pasword = "pw" # <-
`, want: `unknown key "backend.imap.master_pasword"`},

	{name: "unknown backend", doc: listener1 + backendIMAP + `
[backend.smtp] # <-
address = "127.0.0.1:25"
`, want: `unknown key "backend.smtp"`},

	{name: "string for bool", doc: `
state_dir = "state"
require_2fa_outside = "yes" # <-
` + listener1 + backendIMAP, want: "require_2fa_outside: cannot decode TOML string"},

	{name: "integer for string in listener", doc: listener1 + `
[[listener]]
protocol = "imap"
address = 2143 # <-
` + backendIMAP, want: "listener.address: cannot decode TOML integer"},

	{name: "syntax: bare word", doc: `
state_dir = "state"
log_level = info # <-
` + listener1 + backendIMAP, want: "expected newline"},

	{name: "syntax: unclosed header", doc: listener1 + `
[backend.imap # <-
address = "127.0.0.1:143"
`, want: "expected ']'"},

	{name: "syntax: unterminated string", doc: `
accounts = "accounts.toml"
state_dir = "state
` + listener1 + backendIMAP, line: 3, want: "new lines"},

	{name: "syntax: duplicate key", doc: `
log_level = "info"
log_level = "debug" # <-
` + listener1 + backendIMAP, want: "already defined"},

	{name: "bad duration", doc: `
preauth_timeout = "60 seconds" # <-
` + listener1 + backendIMAP, want: `unknown unit " seconds"`},

	{name: "duration given as integer", doc: `
log_level = "info"
idle_timeout = 31 # <-
` + listener1 + backendIMAP, want: `idle_timeout: want a duration string such as "60s" (got integer)`},

	{name: "backend timeout given as float", doc: listener1 + backendIMAP + `timeout = 1.5 # <-
`, want: `backend.imap.timeout: want a duration string`},

	{name: "bad backend timeout", doc: listener1 + backendIMAP + `timeout = "soon" # <-
`, want: `invalid duration "soon"`},

	{name: "negative preauth_timeout", doc: `
preauth_timeout = "-1s" # <-
` + listener1 + backendIMAP, want: "preauth_timeout must be positive"},

	{name: "negative backend timeout", doc: listener1 + backendIMAP + `timeout = "-1s" # <-
`, want: "backend.imap: timeout must be positive"},

	// A naive search for "idle_timeout" would stop at line 2.
	{name: "idle_timeout below 30m", doc: `
accounts = "idle_timeout.toml"
log_level = "info" # idle_timeout = "1h" would do
idle_timeout = "29m" # <-
` + listener1 + backendIMAP, want: "idle_timeout 29m0s is below the minimum 30m0s"},

	{name: "bad log_level", doc: `
log_level = "verbose" # <-
` + listener1 + backendIMAP, want: `log_level "verbose": want debug, info, warn or error`},

	{name: "bad CIDR in a multi-line array", doc: `
trusted_networks = [
  "10.0.0.0/8",
  "127.0.0.1",
  "192.168.0.0/33", # <-
  "2001:db8::/32",
]
` + listener1 + backendIMAP, want: `trusted_networks: "192.168.0.0/33" is not a CIDR prefix`},

	{name: "bad CIDR on one line", doc: `
trusted_networks = ["10.0.0.0/8", "campus"] # <-
` + listener1 + backendIMAP, want: `"campus" is not a CIDR prefix`},

	{name: "no listener", doc: backendIMAP, want: "no [[listener]]"},

	{name: "users bad format", doc: listener1 + backendIMAP + `
[users]
format = "upn" # <-
`, want: `[users]: format "upn": want "local" or "address"`},

	{name: "users address without domains", doc: listener1 + backendIMAP + `
[users]
format = "address" # <-
`, want: `[users]: format "address" needs at least one local domain`},

	{name: "users bad domain", doc: listener1 + backendIMAP + `
[users]
domains = ["example.edu", "not a domain"] # <-
`, want: `[users]: domain "not a domain" is not a domain name`},

	{name: "users domain twice", doc: listener1 + backendIMAP + `
[users]
domains = ["example.edu"] # <-
other_domains = ["EXAMPLE.EDU"]
`, want: `[users]: domain "example.edu" is listed twice in domains and other_domains`},

	{name: "listener without protocol", doc: listener1 + `
[[listener]] # <-
address = "127.0.0.1:2143"
tls = "none"
` + backendIMAP, want: "listener: protocol is required"},

	{name: "listener bad protocol", doc: listener1 + `
[[listener]]
address = "127.0.0.1:2143"
protocol = "imaps" # <-
tls = "none"
` + backendIMAP, want: `listener: protocol "imaps": want imap, pop3 or submission`},

	{name: "listener bad tls", doc: listener1 + `
[[listener]]
protocol = "imap"
tls = "ssl" # <-
address = "127.0.0.1:2143"
` + backendIMAP, want: `listener: tls "ssl": want implicit, starttls or none`},

	{name: "listener bad address", doc: listener1 + `
[[listener]]
protocol = "imap"
address = "127.0.0.1" # <-
tls = "none"
` + backendIMAP, want: `listener: address "127.0.0.1": want host:port`},

	{name: "listener missing address", doc: listener1 + `
[[listener]] # <-
protocol = "imap"
tls = "none"
` + backendIMAP, want: `listener: address "": want host:port`},

	{name: "listener duplicate address", doc: listener1 + `
[[listener]]
protocol = "imap"
address = "127.0.0.1:1143" # <-
tls = "none"
` + backendIMAP, want: "listener: address 127.0.0.1:1143 is used twice"},

	{name: "listener without backend", doc: listener1 + `
[[listener]]
protocol = "pop3" # <-
address = "127.0.0.1:1110"
tls = "none"
` + backendIMAP, want: "listener: protocol pop3 has no [backend.pop3]"},

	{name: "listener in an inline array", doc: `
listener = [
  { protocol = "imap", address = "127.0.0.1:1143", tls = "none" },
  { protocol = "imap", address = "127.0.0.1:2143", tls = "tls" }, # <-
]
` + backendIMAP, want: `listener: tls "tls"`},

	{name: "backend missing master_user", doc: listener1 + `
[backend.imap] # <-
address = "127.0.0.1:143"
master_password = "pw"
`, want: "backend.imap: master_user is required"},

	{name: "backend both passwords", doc: listener1 + `
[backend.imap]
address = "127.0.0.1:143"
master_user = "kanmon"
master_password = "pw"
master_password_file = "pw.txt" # <-
`, want: "backend.imap: set master_password or master_password_file, not both"},

	{name: "backend no password", doc: listener1 + `
[backend.imap] # <-
address = "127.0.0.1:143"
master_user = "kanmon"
`, want: "backend.imap: master_password or master_password_file is required"},

	{name: "backend unreadable master_password_file", doc: listener1 + `
[backend.imap]
address = "127.0.0.1:143"
master_user = "kanmon"
master_password_file = "missing.txt" # <-
`, want: "backend.imap: master_password_file: open "},

	{name: "backend empty master_password_file", doc: listener1 + `
[backend.imap]
master_password_file = "empty.txt" # <-
address = "127.0.0.1:143"
master_user = "kanmon"
`, want: "empty.txt is empty"},

	{name: "backend bad tls", doc: listener1 + `
[backend.imap]
address = "127.0.0.1:143"
tls = "ssl" # <-
master_user = "kanmon"
master_password = "pw"
`, want: `backend.imap: tls "ssl": want none, starttls or implicit`},

	{name: "backend bad address", doc: listener1 + `
[backend.imap]
address = "mail.example.org" # <-
master_user = "kanmon"
master_password = "pw"
`, want: `backend.imap: address "mail.example.org": want host:port`},

	{name: "backend as dotted keys", doc: listener1 + `
[backend]
imap.address = "127.0.0.1:143"
imap.tls = "ssl" # <-
imap.master_user = "kanmon"
imap.master_password = "pw"
`, want: `backend.imap: tls "ssl"`},

	{name: "backend checked without a listener", doc: listener1 + backendIMAP + `
[backend.pop3] # <-
address = "127.0.0.1:110"
master_password = "pw"
`, want: "backend.pop3: master_user is required"},

	{name: "missing tls table, default implicit", doc: listener1 + `
[[listener]] # <-
protocol = "imap"
address = "127.0.0.1:993"
` + backendIMAP, want: "[tls] cert and key are required"},

	{name: "missing tls table, starttls", doc: listener1 + `
[[listener]]
protocol = "imap"
address = "127.0.0.1:143"
tls = "starttls" # <-
` + backendIMAP, want: "[tls] cert and key are required"},

	{name: "tls table without key", doc: `
[tls] # <-
cert = "cert.pem"
` + listener1 + `
[[listener]]
protocol = "imap"
address = "127.0.0.1:993"
` + backendIMAP, want: "[tls] cert and key are required"},
	{name: "redis without url or sentinels", doc: listener1 + backendIMAP + `
[redis] # <-
key_prefix = "k:"
`, want: "redis: set url (one Redis) or sentinels (with master)"},

	{name: "redis url with a password", doc: listener1 + backendIMAP + `
[redis]
url = "redis://:secret@127.0.0.1:6379/0" # <-
`, want: "redis: url holds a password: put it in password_file instead"},

	{name: "redis url and sentinels", doc: listener1 + backendIMAP + `
[redis]
url = "redis://127.0.0.1:6379/0"
sentinels = ["127.0.0.1:26379"] # <-
master = "kanmon"
`, want: "redis: set url or sentinels, not both"},

	{name: "redis sentinels without master", doc: listener1 + backendIMAP + `
[redis] # <-
sentinels = ["127.0.0.1:26379"]
`, want: "redis: master (the Sentinel master name) is required with sentinels"},

	{name: "redis on_failure", doc: listener1 + backendIMAP + `
[redis]
url = "redis://127.0.0.1:6379/0"
on_failure = "open" # <-
`, want: `redis: on_failure "open": want local or closed`},

	{name: "redis key_prefix with a hash tag", doc: listener1 + backendIMAP + `
[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "{x}" # <-
`, want: `redis: key_prefix "{x}": no braces`},

	{name: "redis password_file missing", doc: listener1 + backendIMAP + `
[redis]
url = "redis://127.0.0.1:6379/0"
password_file = "no-such-file" # <-
`, want: "redis.password_file: open "},
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"pw.txt": "pw\n", "empty.txt": "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "kanmon.toml")
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := file + ": "
			if line := tc.line + markedLine(t, tc.doc); line > 0 {
				prefix = fmt.Sprintf("%s:%d: ", file, line)
			}
			c, err := Parse(file, []byte(tc.doc))
			if c != nil {
				t.Errorf("got a config with the error")
			}
			wantErr(t, err, prefix, tc.want)
		})
	}
}

// markedLine returns the line holding "# <-", or 0 when there is none.
func markedLine(t *testing.T, doc string) int {
	t.Helper()
	line := 0
	for i, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, "# <-") {
			if line != 0 {
				t.Fatal("two marked lines")
			}
			line = i + 1
		}
	}
	return line
}

func TestAllUnknownKeysReported(t *testing.T) {
	doc := `
colour = "blue"
` + listener1 + `
[[listener]]
protocol = "imap"
address = "127.0.0.1:2143"
tls = "none"
bogus = 1
` + backendIMAP
	_, err := Parse("k.toml", []byte(doc))
	want := `k.toml:2: unknown key "colour"` + "\n" + `k.toml:13: unknown key "listener.bogus"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}
