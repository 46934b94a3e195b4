package docs_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/lockout"
)

// minimalConfig is the least that loads with every table on: a listener
// and a backend per protocol, the [tls] their default implicit TLS needs,
// and nothing else that has a default.
const minimalConfig = `
[tls]
cert = "cert.pem"
key = "key.pem"

[[listener]]
protocol = "imap"
address = "mail.example.edu:993"

[[listener]]
protocol = "pop3"
address = "mail.example.edu:995"

[[listener]]
protocol = "submission"
address = "mail.example.edu:465"

[backend.imap]
address = "imap.example.edu:143"
master_user = "kanmon"
master_password = "pw"

[backend.pop3]
address = "pop3.example.edu:110"
master_user = "kanmon"
master_password = "pw"

[backend.submission]
address = "smtp.example.edu:587"
master_user = "kanmon"
master_password = "pw"
`

// minimalPortal turns the portal on with only its required key, for the
// defaults of the portal.* keys.
const minimalPortal = `
[portal]
address = "127.0.0.1:8443"
`

// minimalRedis turns [redis] on with one of its required keys, for the
// defaults of the redis.* keys.
const minimalRedis = `
[redis]
url = "redis://127.0.0.1:6379/0"
`

// noDefault lists the keys whose empty default cell is right: they have
// no default because they are needed only with something else.
var noDefault = map[string]string{
	"tls.cert":                       "required by TLS listeners and the portal",
	"tls.key":                        "required by TLS listeners and the portal",
	"backend.*.master_password":      "one of it or master_password_file is required",
	"backend.*.master_password_file": "one of it or master_password is required",
	"redis.url":                      "one of it or sentinels is required",
	"redis.sentinels":                "one of it or url is required",
	"redis.master":                   "required with sentinels",
	"redis.username":                 "only for a Redis with ACL users",
	"redis.password_file":            "only for a Redis with a password",
	"redis.ca_file":                  "the system roots",
	"redis.sentinel_password_file":   "only for Sentinels with a password",
}

// proseDefaults are the defaults written in words rather than as a value,
// each with what it means in minimalConfig. The documented text must match
// exactly, so a reworded default is looked at again.
var proseDefaults = map[string]struct {
	doc  string
	want func(c *config.Config, table reflect.Value) any
}{
	"backend.*.server_name": {
		doc: "the host part of `address`",
		want: func(_ *config.Config, b reflect.Value) any {
			host, _, _ := net.SplitHostPort(b.FieldByName("Address").String())
			return host
		},
	},
	"backend.*.ca_file": {
		doc:  "the system roots",
		want: func(*config.Config, reflect.Value) any { return "" },
	},
	"reserved_connections": {
		doc: "10% of max_connections",
		want: func(c *config.Config, _ reflect.Value) any {
			r := c.MaxConnections / 10
			return &r
		},
	},
	"redis.node": {
		doc: "the host name",
		want: func(*config.Config, reflect.Value) any {
			h, _ := os.Hostname()
			return h
		},
	},
	"portal.mail_host": {
		doc: "the host of the first [[listener]]; when that is a wildcard (0.0.0.0, ::) or empty, the host name the browser used to reach the portal",
		want: func(c *config.Config, _ reflect.Value) any {
			host, _, _ := net.SplitHostPort(c.Listeners[0].Address)
			return host
		},
	},
}

var (
	// literalRE is a default written as a value: "`15s`", "`720h` (30 days)".
	literalRE = regexp.MustCompile("^`([^`]*)`(?: \\([^()]*\\))?$")
	// relativeRE is a path default: `"state", relative to the config file`.
	relativeRE = regexp.MustCompile(`^"([^"]+)", relative to the config file$`)
)

// TestConfigDefaults checks the default column of config.md against what
// Load applies: it loads minimalConfig, and minimalConfig with
// minimalPortal for the portal.* keys, and compares every key that has a
// documented default with the value it got. The [lockout] keys stay zero
// in config and take lockout's defaults when the guard opens, so theirs
// are read from an opened lockout.Guard.
func TestConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	bare := loadConfig(t, filepath.Join(dir, "bare.toml"), minimalConfig)
	withPortal := loadConfig(t, filepath.Join(dir, "portal.toml"), minimalConfig+minimalPortal)
	withRedis := loadConfig(t, filepath.Join(dir, "redis.toml"), minimalConfig+minimalRedis)
	guard, err := lockout.Open(filepath.Join(dir, "kanmon.db"), make([]byte, 32), lockout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer guard.Close()
	lockoutOpts := reflect.ValueOf(guard.Options())

	rows := defaultColumn(t, "config.md")
	checked := 0
	for _, r := range rows {
		table := strings.HasPrefix(r.key, "[")
		switch {
		case r.def == "required":
			continue
		case r.def == "" && (table || noDefault[r.key] != ""):
			continue
		case r.def == "":
			t.Errorf("%s: config.md gives no default; document one, or list the key in noDefault", r.key)
			continue
		}
		c := bare
		if strings.HasPrefix(r.key, "portal.") {
			c = withPortal
		}
		if strings.HasPrefix(r.key, "redis.") {
			c = withRedis
		}
		settings := lookup(reflect.ValueOf(c).Elem(), "", strings.Split(strings.Trim(r.key, "[]"), "."))
		if len(settings) == 0 {
			t.Errorf("%s: config.md documents a default, but the minimal config has no such key", r.key)
			continue
		}
		for _, s := range settings {
			v := s.value
			if s.table.Type() == reflect.TypeFor[config.Lockout]() {
				if !v.IsZero() {
					t.Errorf("%s: config applies %v; want zero, for lockout's default", s.key, v)
				}
				if v = lockoutOpts.FieldByName(s.field); !v.IsValid() {
					t.Errorf("%s: lockout.Options has no field %s", s.key, s.field)
					continue
				}
			}
			got := plain(v)
			if err := checkDefault(r, got, v.Type(), c, s.table); err != nil {
				t.Errorf("%s: %v", s.key, err)
			}
		}
		checked++
	}
	if checked < 50 {
		t.Errorf("checked the defaults of only %d keys of %d rows", checked, len(rows))
	}
	t.Logf("checked %d documented defaults", checked)
}

// checkDefault compares got, a value of type typ in table, with r's
// documented default.
func checkDefault(r refRow, got any, typ reflect.Type, c *config.Config, table reflect.Value) error {
	var want any
	switch m := literalRE.FindStringSubmatch(r.def); {
	case m != nil:
		w, err := parseAs(m[1], typ)
		if err != nil {
			return fmt.Errorf("config.md default %s: %v", r.def, err)
		}
		want = w
	case r.def == "none" || strings.HasPrefix(r.def, "none, "), r.def == "empty" || strings.HasPrefix(r.def, "empty, "):
		if v := reflect.ValueOf(got); got != nil && !v.IsZero() && !(v.Kind() == reflect.Slice && v.Len() == 0) {
			return fmt.Errorf("config.md says the default is %s, but an empty config applies %s", r.def, show(got))
		}
		return nil
	case relativeRE.MatchString(r.def):
		want = filepath.Join(filepath.Dir(c.File), relativeRE.FindStringSubmatch(r.def)[1])
	default:
		p, ok := proseDefaults[r.key]
		if !ok || p.doc != r.def {
			return fmt.Errorf("no rule checks the documented default %q: write it as a value, or add it to proseDefaults", r.def)
		}
		want = p.want(c, table)
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("config.md says the default is %s, but an empty config applies %s", r.def, show(got))
	}
	return nil
}

// show formats a value for a test failure: strings quoted, so that an
// empty one shows.
func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// parseAs reads s, from the default column, as a value of the Go type
// typ: a duration ("15m"), an integer, a boolean or a string.
func parseAs(s string, typ reflect.Type) (any, error) {
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch {
	case typ == reflect.TypeFor[config.Duration](), typ == reflect.TypeFor[time.Duration]():
		return time.ParseDuration(s)
	case typ.Kind() == reflect.Int:
		return strconv.Atoi(s)
	case typ.Kind() == reflect.Bool:
		return strconv.ParseBool(s)
	case typ.Kind() == reflect.String:
		return s, nil
	}
	return nil, fmt.Errorf("no way to read a default of type %s", typ)
}

// plain unwraps a config value for comparison: a Duration becomes a
// time.Duration and a set *bool its bool.
func plain(v reflect.Value) any {
	switch x := v.Interface().(type) {
	case config.Duration:
		return x.Duration
	case *bool:
		if x != nil {
			return *x
		}
	}
	return v.Interface()
}

// setting is one key of a loaded config: its value, the struct (table)
// holding it and the Go name of its field there.
type setting struct {
	key   string // "backend.pop3.timeout", "listener[0].tls"
	value reflect.Value
	table reflect.Value
	field string
}

// lookup finds the settings at the key path segs (config.md's notation:
// "listener[]" for every element, "*" for every sibling table) under the
// struct v, whose own path is prefix.
func lookup(v reflect.Value, prefix string, segs []string) []setting {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	name, each := strings.CutSuffix(segs[0], "[]")
	var out []setting
	for f := range v.Type().Fields() {
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" || key == "-" || name != "*" && key != name {
			continue
		}
		fv, path := v.FieldByIndex(f.Index), prefix+key
		switch {
		case len(segs) == 1:
			out = append(out, setting{key: path, value: fv, table: v, field: f.Name})
		case each:
			for i := range fv.Len() {
				out = append(out, lookup(fv.Index(i), fmt.Sprintf("%s[%d].", path, i), segs[1:])...)
			}
		default:
			out = append(out, lookup(fv, path+".", segs[1:])...)
		}
	}
	return out
}

// refRow is a key of config.md and its default column.
type refRow struct{ key, def string }

// defaultColumn reads the key and default of every table row of the
// Markdown file at path.
func defaultColumn(t *testing.T, path string) []refRow {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows []refRow
	for line := range strings.Lines(string(data)) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "\x00"), " | ")
		if len(cells) != 4 {
			t.Fatalf("%s: want 4 cells: %s", path, line)
		}
		rows = append(rows, refRow{
			key: strings.Trim(cells[0], "| `"),
			def: strings.ReplaceAll(cells[2], "\x00", "|"),
		})
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no table rows", path)
	}
	return rows
}

// loadConfig writes text to path and loads it.
func loadConfig(t *testing.T, path, text string) *config.Config {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
