//go:build unix

// Package prometheus_test checks contrib/prometheus/kanmon-rules.yml: the
// real promtool accepts it and passes its unit tests
// (kanmon-rules.test.yml), every metric it names is one kanmon exports,
// every alert is complete and unit-tested firing and not, and every link
// it gives an admin leads to a heading of kanmon's docs.
package prometheus_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/testenv"
	"github.com/kanmon-mail/kanmon/metrics"
)

const (
	rulesFile = "kanmon-rules.yml"
	testsFile = "kanmon-rules.test.yml"
)

// promtool comes with Debian's prometheus package; scripts/test-deps.sh
// installs it.
var promtool = &testenv.Binary{
	Name:        "promtool",
	Dirs:        []string{"/usr/bin", "/usr/local/bin"},
	Package:     "contrib/prometheus",
	Skipping:    "promtool",
	InstallHint: "apt-get install prometheus",
	// "promtool, version 2.42.0+ds (branch: debian/sid, revision: ...)"
	Version: func(out string) (string, error) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(out), "promtool, version ")
		if !ok || rest == "" {
			return "", fmt.Errorf("no version in %q", strings.TrimSpace(out))
		}
		return strings.Fields(rest)[0], nil
	},
}

// The rules load, with every lint on, and pass their unit tests.
func TestPromtool(t *testing.T) {
	bin, ok := promtool.Require(t)
	if !ok {
		return
	}
	v, _ := promtool.VersionOf(bin)
	t.Logf("%s %s", bin, v)
	for _, args := range [][]string{
		{"check", "rules", "--lint=all", "--lint-fatal", rulesFile},
		{"test", "rules", testsFile},
	} {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// A missing promtool skips TestPromtool, and fails it under CI.
func TestPromtoolUnavailable(t *testing.T) {
	testenv.CheckUnavailable(t, promtool)
}

// exported returns the names of the series a fully wired kanmon exports:
// every recorder called once and every watcher set, as on a node with
// [tls], [redis] and its accounts in PostgreSQL.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	m.Login("imap", metrics.ResultOK, "passcode", time.Millisecond)
	m.BackendError("imap", "dial")
	m.Reload(true)
	m.Refused("imap", "max_connections")
	m.WatchServer(func() metrics.ServerStats {
		return metrics.ServerStats{
			Sessions: map[string]int{"imap": 1},
			BytesIn:  map[string]int64{"imap": 1}, BytesOut: map[string]int64{"imap": 1},
		}
	})
	m.WatchLockouts(func() map[string]int { return map[string]int{"account+ip": 1} })
	m.WatchRedis(func() bool { return true })
	m.WatchAccountsDB(func() bool { return true })
	m.WatchCertificate(func() *tls.Certificate {
		return &tls.Certificate{Leaf: &x509.Certificate{NotAfter: time.Now().Add(time.Hour)}}
	})
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+suffix] = true
			}
		}
	}
	return names
}

// kanmonName is a name of kanmon's own: a metric, or a word that looks
// like one. The files name no other thing this way.
var kanmonName = regexp.MustCompile(`\bkanmon_[a-z0-9_]*[a-z0-9]\b`)

// Every kanmon_ name in the rules and their tests is a metric kanmon
// exports: a renamed metric breaks this test, not the alert in silence.
func TestRuleMetricsExist(t *testing.T) {
	names := exported(t)
	for _, want := range []string{
		"kanmon_backend_errors_total", "kanmon_lockouts_active",
		"kanmon_tls_certificate_expiry_timestamp_seconds", "kanmon_redis_up", "kanmon_accounts_db_up",
	} {
		if !names[want] {
			t.Fatalf("the fully wired registry lacks %s: exported() is missing a watcher", want)
		}
	}
	files := []string{rulesFile, testsFile}
	for i, text := range texts(t, files...) {
		file := files[i]
		used := map[string]bool{}
		for _, name := range kanmonName.FindAllString(text, -1) {
			used[name] = true
		}
		if len(used) < 5 {
			t.Errorf("%s names %d kanmon metrics, want the 5 the alerts use", file, len(used))
		}
		for name := range used {
			if !names[name] {
				t.Errorf("%s names %s, which kanmon does not export", file, name)
			}
		}
	}
}

// alert is one alerting rule as kanmon-rules.yml spells it.
type alert struct {
	name string
	line int
	keys map[string]string // each "key: value" line's key, and its value
}

// alerts reads the rules file's alerts, each a "- alert: Name" line and
// the lines up to the next one.
func alerts(t *testing.T) []alert {
	t.Helper()
	var out []alert
	n := 0
	for line := range strings.Lines(texts(t, rulesFile)[0]) {
		n++
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "- alert: "); ok {
			out = append(out, alert{name: name, line: n, keys: map[string]string{}})
			continue
		}
		if len(out) == 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.ContainsAny(k, " {(") {
			out[len(out)-1].keys[k] = strings.TrimSpace(v)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no alerts", rulesFile)
	}
	return out
}

// Every alert waits (for:), says how bad it is, tells the admin what
// happened and what to do, with a link, and has its test group with a
// time it fires and a time it does not.
func TestAlertsComplete(t *testing.T) {
	tests := texts(t, testsFile)[0]
	for _, a := range alerts(t) {
		for _, key := range []string{"expr", "for", "severity", "summary", "description", "runbook_url"} {
			if _, ok := a.keys[key]; !ok {
				t.Errorf("%s:%d: %s has no %s", rulesFile, a.line, a.name, key)
			}
		}
		if s := a.keys["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s:%d: %s has severity %q, want critical or warning", rulesFile, a.line, a.name, s)
		}
		if d, err := time.ParseDuration(a.keys["for"]); err != nil || d <= 0 {
			t.Errorf("%s:%d: %s waits for %q, want a duration", rulesFile, a.line, a.name, a.keys["for"])
		}
		if !strings.Contains(tests, "\n  - name: "+a.name+"\n") {
			t.Errorf("%s: no test group named %s", testsFile, a.name)
		}
		// Each case is "alertname: X" followed by its exp_alerts.
		fires := strings.Contains(tests, "alertname: "+a.name+"\n        exp_alerts:\n")
		quiet := strings.Contains(tests, "alertname: "+a.name+"\n        exp_alerts: []\n")
		if !fires || !quiet {
			t.Errorf("%s: %s is tested firing %v and not firing %v; want both", testsFile, a.name, fires, quiet)
		}
	}
}

// docsURL is where the runbook links lead: a file of this repository.
const docsURL = "https://github.com/kanmon-mail/kanmon/blob/main/"

// Every runbook_url names a file of the repository and a heading in it,
// as GitHub makes its anchor.
func TestRunbookLinks(t *testing.T) {
	for _, a := range alerts(t) {
		link := a.keys["runbook_url"]
		file, anchor, ok := strings.Cut(strings.TrimPrefix(link, docsURL), "#")
		if !strings.HasPrefix(link, docsURL) || !ok {
			t.Errorf("%s: runbook_url %q: want %sFILE#HEADING", a.name, link, docsURL)
			continue
		}
		if !headings(t, "../../"+file)[anchor] {
			t.Errorf("%s: runbook_url %q: %s has no heading #%s", a.name, link, file, anchor)
		}
	}
}

// headings returns the anchors GitHub gives the Markdown headings of path
// (code blocks left out): lower case, without punctuation, spaces made
// hyphens.
func headings(t *testing.T, path string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	fenced := false
	for line := range strings.Lines(texts(t, path)[0]) {
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "```"):
			fenced = !fenced
		case !fenced && strings.HasPrefix(line, "#"):
			text := strings.TrimSpace(strings.TrimLeft(line, "#"))
			var b strings.Builder
			for _, r := range strings.ToLower(text) {
				switch {
				case r == ' ':
					b.WriteByte('-')
				case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
					b.WriteRune(r)
				}
			}
			out[b.String()] = true
		}
	}
	return out
}

// texts returns the text of each file at paths, relative to this
// directory.
func texts(t *testing.T, paths ...string) []string {
	t.Helper()
	out := make([]string, len(paths))
	for i, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out
}
