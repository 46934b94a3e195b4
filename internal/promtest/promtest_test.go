//go:build unix

package promtest

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// TestMain fails the package when a goroutine (a process waiter, an HTTP
// connection) outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A real Prometheus scrapes a handler that counts its scrapes; the test
// waits for scrapes, queries the counter, a scalar and a broken
// expression, and reads the job's label values.
func TestScrapeAndQuery(t *testing.T) {
	var scrapes atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# TYPE promtest_scrapes_total counter\npromtest_scrapes_total %d\n", n)
	}))
	defer target.Close()
	addr := strings.TrimPrefix(target.URL, "http://")

	s := Start(t, Options{Job: "promtest", Targets: []string{addr}, ScrapeInterval: 200 * time.Millisecond})
	ctx := context.Background()
	s.WaitScraped(t, 10*time.Second, time.Now())
	targets, err := s.Targets(ctx)
	if err != nil || len(targets) != 1 || targets[0].Labels["instance"] != addr || targets[0].Labels["job"] != "promtest" {
		t.Fatalf("Targets() = %+v, %v; want one up target %s of job promtest", targets, err, addr)
	}

	got, err := s.Query(ctx, `promtest_scrapes_total{job="promtest"}`)
	if err != nil || len(got) != 1 || got[0].Value < 1 || got[0].Metric["instance"] != addr {
		t.Fatalf("Query(counter) = %v, %v; want one sample >= 1 of %s", got, err, addr)
	}
	if got, err := s.Query(ctx, "1 + 1"); err != nil || len(got) != 1 || got[0].Value != 2 || len(got[0].Metric) != 0 {
		t.Errorf("Query(1 + 1) = %v, %v; want the scalar 2", got, err)
	}
	if got, err := s.Query(ctx, "0 / 0"); err != nil || len(got) != 1 || !math.IsNaN(got[0].Value) {
		t.Errorf("Query(0 / 0) = %v, %v; want NaN", got, err)
	}
	if got, err := s.Query(ctx, `promtest_nothing_total`); err != nil || len(got) != 0 {
		t.Errorf("Query(unknown metric) = %v, %v; want no samples", got, err)
	}
	if _, err := s.Query(ctx, `sum by (job) (rate(promtest_scrapes_total[1m])`); err == nil || !strings.Contains(err.Error(), "bad_data") {
		t.Errorf("Query(unbalanced parentheses) error = %v; want bad_data", err)
	}
	if _, err := s.Query(ctx, `promtest_scrapes_total[1m]`); err == nil || !strings.Contains(err.Error(), "matrix") {
		t.Errorf("Query(range vector) error = %v; want one naming the matrix result", err)
	}
	if jobs, err := s.LabelValues(ctx, "job", "promtest_scrapes_total"); err != nil || !slices.Equal(jobs, []string{"promtest"}) {
		t.Errorf("LabelValues(job) = %v, %v; want [promtest]", jobs, err)
	}
}

// A missing prometheus binary skips the test, and fails it under CI.
func TestUnavailable(t *testing.T) {
	testenv.CheckUnavailable(t, prometheus)
}

func TestConfig(t *testing.T) {
	got := config(Options{Job: "kanmon", Targets: []string{"127.0.0.1:9100", "127.0.0.2:9100"}, ScrapeInterval: 1500 * time.Millisecond})
	for _, want := range []string{
		"  scrape_interval: 1500ms\n  scrape_timeout: 1500ms\n",
		`  - job_name: "kanmon"`,
		`          - "127.0.0.1:9100"` + "\n" + `          - "127.0.0.2:9100"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
}
