//go:build unix

// Package promtest starts a private, real Prometheus server for tests and
// asks it questions over its HTTP API.
//
// Start writes a configuration of its own into a t.TempDir (one scrape job
// over the given targets, scraped often), keeps the time-series database
// there too, listens on a free loopback port and kills the server at
// t.Cleanup. Nothing from /etc/prometheus is read and no system Prometheus
// service is used. Whenever the test has failed, the cleanup prints the
// server's log.
//
// When the prometheus binary is missing the test is skipped, except when
// the environment variable CI is "true": then a missing Prometheus fails
// the test, so that CI cannot pass by skipping the real-Prometheus tests.
package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install prometheus"

// Options configures one Prometheus server.
type Options struct {
	// Job is the scrape job's name, the job label of what it scrapes.
	// Default: "test".
	Job string
	// Targets are the host:port addresses scraped at /metrics.
	Targets []string
	// ScrapeInterval is how often every target is scraped. Default: 1s.
	ScrapeInterval time.Duration
}

// Server is one private Prometheus.
type Server struct {
	addr   string // 127.0.0.1:PORT of the web listener and API
	logs   testenv.Logs
	runner testenv.Runner
	failed testenv.FailureLog
	client *http.Client
}

// prometheus is the binary Start runs. Any Prometheus 2 or later takes
// its configuration, flags and API v1; an older one fails to start, with
// its log.
var prometheus = &testenv.Binary{
	Name:        "prometheus",
	Dirs:        []string{"/usr/bin", "/usr/local/bin"},
	Package:     "promtest",
	Skipping:    "real-Prometheus",
	InstallHint: InstallHint,
}

// Require skips the test (fails it under CI) unless a supported
// prometheus binary is there, as Start would; a test calls it to skip
// before a slower set-up of its own. It reports whether the test goes on.
func Require(t testing.TB) bool {
	t.Helper()
	_, ok := prometheus.Require(t)
	return ok
}

// Start runs a private Prometheus that scrapes opts.Targets, until the
// test ends; it waits until the server is ready, for up to 10 seconds, and
// fails the test with the server's log when it is not. Without a
// prometheus binary it skips the test (fails it under CI) and returns nil.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, found := prometheus.Require(t)
	if !found {
		return nil
	}
	if opts.Job == "" {
		opts.Job = "test"
	}
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = time.Second
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(config(opts)), 0o600); err != nil {
		t.Fatalf("promtest: %v", err)
	}
	s := &Server{
		logs:   testenv.Logs{Dir: dir, Output: "prometheus.log", Perm: 0o600},
		client: &http.Client{Timeout: 10 * time.Second},
	}
	t.Cleanup(func() {
		if p := s.runner.Process(); p != nil {
			p.Kill()
		}
		s.failed.Cleanup(t, "promtest: log of prometheus "+s.addr, s.Log)
	})
	err := testenv.RetryPorts(1, func(ports []int) error {
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		argv := []string{bin,
			"--config.file=" + conf,
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + s.addr,
		}
		err := s.runner.Launch(argv, s.logs, syscall.SIGKILL, s.ready, nil)
		// Prometheus says "bind: address already in use", in lower case,
		// which testenv does not recognize by itself.
		if err != nil && strings.Contains(s.Log(), "address already in use") {
			err = fmt.Errorf("%w: %v", testenv.ErrAddrInUse, err)
		}
		return err
	})
	if err != nil {
		t.Fatalf("promtest: starting %s: %v\nlog:\n%s", bin, err, s.failed.Shown(s.Log()))
	}
	return s
}

// config renders the configuration file for opts. JSON strings are YAML
// strings, so every value is quoted with %q.
func config(opts Options) string {
	var b strings.Builder
	b.WriteString("# Private test instance written by kanmon's internal/promtest.\n")
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n",
		promDuration(opts.ScrapeInterval), promDuration(opts.ScrapeInterval), promDuration(opts.ScrapeInterval))
	fmt.Fprintf(&b, "scrape_configs:\n  - job_name: %q\n    static_configs:\n      - targets:\n", opts.Job)
	for _, target := range opts.Targets {
		fmt.Fprintf(&b, "          - %q\n", target)
	}
	return b.String()
}

// promDuration writes d in Prometheus's duration format, in milliseconds.
func promDuration(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
}

// ready reports whether Prometheus says it is ready to serve queries.
func (s *Server) ready() error {
	resp, err := s.client.Get(s.URL() + "/-/ready")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /-/ready: %s", resp.Status)
	}
	return nil
}

// Addr returns the server's "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// URL returns "http://127.0.0.1:PORT", the base of the web UI and API.
func (s *Server) URL() string { return "http://" + s.addr }

// Log returns what the server wrote to stdout and stderr. The cleanup
// prints it by itself when the test has failed.
func (s *Server) Log() string { return s.logs.String() }

// Sample is one element of an instant query's result: a series' labels
// and its value, which may be NaN or infinite.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// String is the sample as the Prometheus UI shows it: {a="b"} 1.
func (s Sample) String() string {
	labels := make([]string, 0, len(s.Metric))
	for k, v := range s.Metric {
		labels = append(labels, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(labels)
	return "{" + strings.Join(labels, ", ") + "} " + strconv.FormatFloat(s.Value, 'g', -1, 64)
}

// Query evaluates the PromQL expression expr at the current time
// (/api/v1/query) and returns the samples of the instant vector, or one
// sample without labels for a scalar. An expression that does not parse,
// that fails to evaluate, or that yields a range vector or a string is an
// error, with Prometheus's message.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(vec))
		for _, v := range vec {
			f, err := parseValue(v.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, Sample{Metric: v.Metric, Value: f})
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(data.Result, &v); err != nil {
			return nil, err
		}
		f, err := parseValue(v)
		if err != nil {
			return nil, err
		}
		return []Sample{{Value: f}}, nil
	}
	return nil, fmt.Errorf("query %q: result type %q, want an instant vector or a scalar", expr, data.ResultType)
}

// parseValue reads the [timestamp, "value"] pair of the API.
func parseValue(v [2]any) (float64, error) {
	str, ok := v[1].(string)
	if !ok {
		return 0, fmt.Errorf("value %v is not a string", v[1])
	}
	switch str {
	case "NaN":
		return math.NaN(), nil
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	}
	return strconv.ParseFloat(str, 64)
}

// LabelValues returns the values of label among the series that match any
// of the selectors in match (/api/v1/label/NAME/values), as Grafana's
// label_values(selector, label) variable query does.
func (s *Server) LabelValues(ctx context.Context, label string, match ...string) ([]string, error) {
	var values []string
	err := s.get(ctx, "/api/v1/label/"+url.PathEscape(label)+"/values", url.Values{"match[]": match}, &values)
	return values, err
}

// Target is one active scrape target (/api/v1/targets).
type Target struct {
	// Labels are the target's labels, job and instance among them.
	Labels map[string]string `json:"labels"`
	// Health is "up", "down" or "unknown" (not scraped yet).
	Health string `json:"health"`
	// LastError is the last scrape's error, "" after a good one.
	LastError string `json:"lastError"`
	// LastScrape is when the last scrape started: the time of the
	// samples it took.
	LastScrape time.Time `json:"lastScrape"`
}

// Targets returns the active scrape targets.
func (s *Server) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		Active []Target `json:"activeTargets"`
	}
	err := s.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &data)
	return data.Active, err
}

// WaitScraped waits until every target has been scraped successfully by a
// scrape that started after after, so that the samples hold everything
// the targets had done by then; it fails the test after timeout.
func (s *Server) WaitScraped(t testing.TB, timeout time.Duration, after time.Time) {
	t.Helper()
	testenv.WaitFor(t, timeout, "Prometheus to scrape every target after "+after.Format(time.RFC3339Nano), func() error {
		targets, err := s.Targets(context.Background())
		if err != nil {
			return err
		}
		if len(targets) == 0 {
			return fmt.Errorf("no active targets")
		}
		for _, tg := range targets {
			if tg.Health != "up" || !tg.LastScrape.After(after) {
				return fmt.Errorf("target %s: health %q, last scrape %s, last error %q",
					tg.Labels["instance"], tg.Health, tg.LastScrape.Format(time.RFC3339Nano), tg.LastError)
			}
		}
		return nil
	})
}

// get calls the API endpoint path with query, and decodes the data of a
// successful answer into data. An answer with status "error" becomes an
// error with Prometheus's errorType and message.
func (s *Server) get(ctx context.Context, path string, query url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+path+"?"+query.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var answer struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return fmt.Errorf("GET %s: %s: %v: %.200q", path, resp.Status, err, body)
	}
	if answer.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s: %s", path, resp.Status, answer.ErrorType, answer.Error)
	}
	return json.Unmarshal(answer.Data, data)
}
