//go:build unix

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/pgtest"
	"github.com/kanmon-mail/kanmon/internal/promtest"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// Issue 14: the Grafana dashboard contrib/grafana/kanmon.json, checked
// against a real Prometheus (Debian's) that scrapes two real `kanmon
// serve` nodes after real logins against the real Dovecot: one node on
// its own (accounts file), one in cluster mode ([redis] on a real Redis,
// accounts in a real PostgreSQL), so that every panel, the cluster ones
// too, has something to show. Every query of every panel, with the
// dashboard's variables filled in as Grafana fills them, must parse and
// return at least one series with a value that is a number.

// dashboardPath is the dashboard, relative to this package.
const dashboardPath = "../contrib/grafana/kanmon.json"

// rateInterval is what the test puts for $__rate_interval: Grafana makes
// it at least four scrape intervals, and the test's Prometheus scrapes
// every second.
const rateInterval = "30s"

// grafanaDashboard is the part of a Grafana dashboard the test reads.
type grafanaDashboard struct {
	SchemaVersion int            `json:"schemaVersion"`
	UID           string         `json:"uid"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []grafanaVariable `json:"list"`
	} `json:"templating"`
}

// grafanaPanel is a panel, or a row with the panels it holds when
// collapsed.
type grafanaPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *grafanaDSRef    `json:"datasource"`
	Targets    []grafanaTarget  `json:"targets"`
	Panels     []grafanaPanel   `json:"panels"`
	GridPos    *json.RawMessage `json:"gridPos"`
}

// grafanaTarget is one query of a panel.
type grafanaTarget struct {
	RefID      string        `json:"refId"`
	Expr       string        `json:"expr"`
	Datasource *grafanaDSRef `json:"datasource"`
}

// grafanaDSRef names a data source.
type grafanaDSRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// grafanaVariable is a template variable.
type grafanaVariable struct {
	Name       string        `json:"name"`
	Type       string        `json:"type"`
	Query      any           `json:"query"`
	Definition string        `json:"definition"`
	Datasource *grafanaDSRef `json:"datasource"`
	IncludeAll bool          `json:"includeAll"`
	Multi      bool          `json:"multi"`
	AllValue   string        `json:"allValue"`
}

// dsVariable is the dashboard's data source variable; every query names
// it, so that the dashboard works with whatever the Prometheus data
// source is called.
const dsVariable = "${datasource}"

// loadDashboard reads the dashboard and checks its structure: a Grafana
// 10/11 schema, a Prometheus data source variable that every panel and
// query uses, unique panel ids and titles, and at least one query per
// panel. It returns the panels, rows left out and collapsed rows' panels
// taken in.
func loadDashboard(t *testing.T) (*grafanaDashboard, []grafanaPanel) {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.SchemaVersion < 38 || d.UID == "" {
		t.Errorf("%s: schemaVersion %d, uid %q; want 38 or later (Grafana 10 and 11) and a uid", dashboardPath, d.SchemaVersion, d.UID)
	}
	ds := dashboardVariable(&d, "datasource")
	if ds == nil || ds.Type != "datasource" || ds.Query != "prometheus" {
		t.Errorf("%s: want a variable \"datasource\" of type datasource for prometheus, got %+v", dashboardPath, ds)
	}
	var panels []grafanaPanel
	ids, titles := map[int]bool{}, map[string]bool{}
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("panel %q: id %d is 0 or used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil {
				t.Errorf("panel %q has no gridPos", p.Title)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Title == "" || titles[p.Title] {
				t.Errorf("panel id %d: title %q is empty or used twice", p.ID, p.Title)
			}
			titles[p.Title] = true
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Datasource == nil || p.Datasource.UID != dsVariable {
				t.Errorf("panel %q: datasource %+v, want uid %s", p.Title, p.Datasource, dsVariable)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != dsVariable || tg.Expr == "" {
					t.Errorf("panel %q query %s: datasource %+v, expr %q; want uid %s and an expression", p.Title, tg.RefID, tg.Datasource, tg.Expr, dsVariable)
				}
			}
			panels = append(panels, p)
		}
	}
	walk(d.Panels)
	if t.Failed() {
		t.FailNow()
	}
	return &d, panels
}

// dashboardVariable returns the variable named name, or nil.
func dashboardVariable(d *grafanaDashboard, name string) *grafanaVariable {
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == name {
			return &d.Templating.List[i]
		}
	}
	return nil
}

// grafanaRegexEscape escapes a variable's value for a =~ matcher as
// Grafana's Prometheus data source does (prometheusSpecialRegexEscape):
// a regular-expression escape, written inside a PromQL string.
func grafanaRegexEscape(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\\\`)
	return regexp.MustCompile(`[$^*{}\[\]'+?.()|]`).ReplaceAllString(v, `\\$0`)
}

// labelValuesRE is Grafana's label_values(selector, label) variable
// query.
var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// dashboardVars fills the query variables in the order the dashboard
// lists them, each from its label_values query against prom, as Grafana
// does with "All" selected: the values, escaped, as (a|b), for a multi
// variable with no allValue. It fails unless each variable has values;
// it returns the values and what $NAME becomes in a query.
func dashboardVars(t *testing.T, d *grafanaDashboard, prom *promtest.Server) (values map[string][]string, subst map[string]string) {
	t.Helper()
	values, subst = map[string][]string{}, map[string]string{"__rate_interval": rateInterval}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != dsVariable {
			t.Errorf("variable %s: datasource %+v, want uid %s", v.Name, v.Datasource, dsVariable)
		}
		m := labelValuesRE.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Fatalf("variable %s: definition %q is not label_values(selector, label)", v.Name, v.Definition)
		}
		selector := expandVars(t, m[1], subst)
		got, err := prom.LabelValues(context.Background(), m[2], selector)
		if err != nil || len(got) == 0 {
			t.Fatalf("variable %s: label_values(%s, %s) = %v, %v; want values", v.Name, selector, m[2], got, err)
		}
		if !v.Multi || !v.IncludeAll || v.AllValue != "" {
			t.Errorf("variable %s: multi %t, includeAll %t, allValue %q; want a multi variable whose All is its values (a .* would match other jobs' series)",
				v.Name, v.Multi, v.IncludeAll, v.AllValue)
		}
		escaped := make([]string, len(got))
		for i, value := range got {
			escaped[i] = grafanaRegexEscape(value)
		}
		values[v.Name] = got
		subst[v.Name] = "(" + strings.Join(escaped, "|") + ")"
	}
	return values, subst
}

// varRE is a variable reference in a query: $name or ${name}.
var varRE = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?`)

// expandVars replaces the variables in expr; one that subst lacks fails
// the test.
func expandVars(t *testing.T, expr string, subst map[string]string) string {
	t.Helper()
	return varRE.ReplaceAllStringFunc(expr, func(ref string) string {
		name := varRE.FindStringSubmatch(ref)[1]
		v, ok := subst[name]
		if !ok {
			t.Errorf("query %q uses $%s, which the dashboard does not define", expr, name)
		}
		return v
	})
}

func TestE2EGrafanaDashboard(t *testing.T) {
	d, panels := loadDashboard(t)
	promtest.Require(t)
	dc := startDovecot(t, dovecottest.Options{}, "alice", "carol")
	deadPorts, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	lockoutBody := kanmontest.DefaultLockout + "account_ip_threshold = 3\naccount_ip_window = \"720h\"\n"
	// The single node: a submission backend that nobody listens on
	// (backend errors, unavailable logins), one session per user and
	// address (caps hit), passcodes to revoke (reloads).
	single := serveFiles(t, dc, kanmontest.Options{
		MetricsAddress:    true,
		POP3Backend:       dc.POP3Addr,
		SubmissionBackend: fmt.Sprintf("127.0.0.1:%d", deadPorts[0]),
		Passcodes:         map[string][]string{"alice": {"Thunderbird", "Old1", "Old2"}},
		Extra:             "max_sessions_per_user_ip = 1\n",
		Lockout:           lockoutBody,
	})
	// The cluster node: [redis] and the accounts in PostgreSQL.
	rd := redistest.Start(t, redistest.Options{})
	pg := pgtest.Start(t, pgtest.Options{})
	clustered := serveFiles(t, dc, kanmontest.Options{
		MetricsAddress: true,
		POP3Backend:    dc.POP3Addr,
		Passcodes:      map[string][]string{"alice": {"Thunderbird"}},
		Lockout:        lockoutBody,
	})
	appendConfig(t, clustered.ConfigPath, fmt.Sprintf("\n[redis]\nurl = %q\nnode = \"grafana2\"\n", rd.URL()))
	// Prometheus starts first: it takes a few seconds to apply its
	// targets, while kanmon builds.
	prom := promtest.Start(t, promtest.Options{Job: "kanmon", Targets: []string{single.MetricsAddr, clustered.MetricsAddr}})
	bin := buildKanmon(t)
	moveAccountsToPG(t, bin, clustered, pg)
	startServe(t, bin, single.ConfigPath, single.IMAPS)
	startServe(t, bin, clustered.ConfigPath, clustered.IMAPS)
	prom.WaitScraped(t, 20*time.Second, time.Now())

	// Two rounds of logins, each scraped: a counter that rises in both
	// rounds rises between two scrapes, so its rate is above 0 and the
	// latency quantiles are numbers, not NaN. alice's session from
	// 127.0.0.3 stays open to the end.
	for round := 1; round <= 2; round++ {
		for _, f := range []*kanmontest.Files{single, clustered} {
			driveLogins(t, f)
		}
		if round == 1 {
			holdSession(t, single, "127.0.0.3", "alice", single.Passcode("alice", "Thunderbird"))
		}
		// The cap: a second session of alice from 127.0.0.3.
		if got := loginAt(t, single.IMAPS, single.ClientTLS, "127.0.0.3", "alice", single.Passcode("alice", "Thunderbird")); !strings.HasPrefix(got, "NO [LIMIT]") {
			t.Fatalf("alice's second session from 127.0.0.3: S: a1 %s (want NO [LIMIT])", got)
		}
		submitUnavailable(t, single)
		// A revocation, applied by a reload.
		mustRun(t, bin, "passcode", "revoke", "-config", single.ConfigPath, "alice", fmt.Sprintf("Old%d", round))
		mustRun(t, bin, "reload", "-config", single.ConfigPath)
		prom.WaitScraped(t, 10*time.Second, time.Now())
	}
	prom.WaitScraped(t, 10*time.Second, time.Now())

	values, subst := dashboardVars(t, d, prom)
	for _, addr := range []string{single.MetricsAddr, clustered.MetricsAddr} {
		if !slices.Contains(values["instance"], addr) {
			t.Errorf("the instance variable's values %v lack the node %s", values["instance"], addr)
		}
	}
	ctx := context.Background()
	for _, p := range panels {
		for _, tg := range p.Targets {
			expr := expandVars(t, tg.Expr, subst)
			samples, err := prom.Query(ctx, expr)
			switch {
			case err != nil:
				t.Errorf("panel %q query %s: %v\nquery: %s", p.Title, tg.RefID, err, expr)
			case len(samples) == 0:
				t.Errorf("panel %q query %s returned no series\nquery: %s", p.Title, tg.RefID, expr)
			case !slices.ContainsFunc(samples, func(s promtest.Sample) bool { return !math.IsNaN(s.Value) }):
				t.Errorf("panel %q query %s returned only NaN: %v\nquery: %s", p.Title, tg.RefID, samples, expr)
			default:
				t.Logf("panel %q query %s: %v", p.Title, tg.RefID, samples)
			}
			// The cluster-mode metrics come from the cluster node
			// alone, which reaches Redis and PostgreSQL.
			if strings.Contains(expr, "kanmon_redis_up") || strings.Contains(expr, "kanmon_accounts_db_up") {
				if len(samples) != 1 || samples[0].Metric["instance"] != clustered.MetricsAddr || samples[0].Value != 1 {
					t.Errorf("panel %q query %s = %v; want 1 for %s alone", p.Title, tg.RefID, samples, clustered.MetricsAddr)
				}
			}
		}
	}
}

// driveLogins makes the logins of one round on the node of f: good and
// failed ones over IMAP and POP3, with some mail traffic. The failures
// come from their own addresses, so that the lock they make (alice's
// account+ip lock from 127.0.0.2, after three) leaves the good logins
// from 127.0.0.1 alone.
func driveLogins(t *testing.T, f *kanmontest.Files) {
	t.Helper()
	passcode := f.Passcode("alice", "Thunderbird")
	for _, login := range []struct{ user, secret string }{{"alice", passcode}, {"carol", carolPassword}} {
		r := &rawIMAP{lineFrom(t, f.IMAPS, "127.0.0.1", nil, f.ClientTLS)}
		r.greeting("* OK ")
		wantOK(t, "IMAP "+login.user, r.cmd("a1 LOGIN "+login.user+" "+login.secret))
		wantOK(t, "SELECT", r.cmd("a2 SELECT INBOX"))
		wantOK(t, "LOGOUT", r.cmd("a3 LOGOUT"))
		r.conn.Close()
	}
	p := &rawPOP3{lineFrom(t, f.POP3S, "127.0.0.1", nil, f.ClientTLS)}
	p.greeting("+OK ")
	if got := p.login("carol", carolPassword); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("POP3 carol: S: %s", got)
	}
	p.ok("STAT")
	p.ok("QUIT")
	p.conn.Close()

	for i := range 3 {
		if got := loginAt(t, f.IMAPS, f.ClientTLS, "127.0.0.2", "alice", wrongPasscode(i)); !strings.HasPrefix(got, "NO ") {
			t.Fatalf("IMAP alice with a wrong passcode: S: a1 %s", got)
		}
	}
	for _, login := range []struct{ ip, user, secret string }{
		{"127.0.0.1", "carol", "not-carols-password"},
		{"127.0.0.2", "alice", alicePassword},
	} {
		p := &rawPOP3{lineFrom(t, f.POP3S, login.ip, nil, f.ClientTLS)}
		p.greeting("+OK ")
		if got := p.login(login.user, login.secret); !strings.HasPrefix(got, "-ERR") {
			t.Fatalf("POP3 %s with a wrong secret: S: %s", login.user, got)
		}
		p.conn.Close()
	}
}

// holdSession logs user in over IMAP from ip and keeps the session open
// until the test ends.
func holdSession(t *testing.T, f *kanmontest.Files, ip, user, secret string) {
	t.Helper()
	r := &rawIMAP{lineFrom(t, f.IMAPS, ip, nil, f.ClientTLS)}
	r.greeting("* OK ")
	wantOK(t, "IMAP "+user+" from "+ip, r.cmd("a1 LOGIN "+user+" "+secret))
	_ = r.conn.SetDeadline(time.Time{})
}

// submitUnavailable logs carol in over submission, whose backend does
// not listen: a temporary failure.
func submitUnavailable(t *testing.T, f *kanmontest.Files) {
	t.Helper()
	s := dialRawSMTP(t, f.SubmissionS, f.ClientTLS)
	s.extensions()
	plain := base64.StdEncoding.EncodeToString([]byte("\x00carol\x00" + carolPassword))
	if got := s.cmd("AUTH PLAIN " + plain); !strings.HasPrefix(got, "454 ") {
		t.Fatalf("submission with its backend down: S: %s (want 454)", got)
	}
	s.conn.Close()
}
