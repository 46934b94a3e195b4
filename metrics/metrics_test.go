package metrics

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestHandlerServesRecordedMetrics(t *testing.T) {
	m := New()
	m.Login("imap", ResultOK, "passcode", 30*time.Millisecond)
	m.Login("imap", ResultFailed, "no_match", 1100*time.Millisecond)
	m.BackendError("pop3", "dial")
	m.Reload(true)
	m.Reload(false)
	m.Reload(false)
	m.Refused("submission", "max_connections")
	m.WatchServer(func() ServerStats {
		return ServerStats{
			Connections: 7,
			Sessions:    map[string]int{"imap": 3, "pop3": 0},
			BytesIn:     map[string]int64{"imap": 100},
			BytesOut:    map[string]int64{"imap": 2000},
		}
	})
	m.WatchLockouts(func() map[string]int { return map[string]int{"account+ip": 2, "ip": 0} })
	hs := httptest.NewServer(m.Handler())
	defer hs.Close()

	code, body := get(t, hs.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, want := range []string{
		`kanmon_logins_total{protocol="imap",reason="passcode",result="ok"} 1`,
		`kanmon_logins_total{protocol="imap",reason="no_match",result="failed"} 1`,
		`kanmon_login_duration_seconds_bucket{protocol="imap",result="ok",le="0.05"} 1`,
		`kanmon_login_duration_seconds_bucket{protocol="imap",result="failed",le="1"} 0`,
		`kanmon_login_duration_seconds_bucket{protocol="imap",result="failed",le="2.5"} 1`,
		`kanmon_backend_errors_total{kind="dial",protocol="pop3"} 1`,
		`kanmon_reloads_total{result="ok"} 1`,
		`kanmon_reloads_total{result="error"} 2`,
		`kanmon_limit_refusals_total{limit="max_connections",protocol="submission"} 1`,
		`kanmon_connections 7`,
		`kanmon_sessions{protocol="imap"} 3`,
		`kanmon_sessions{protocol="pop3"} 0`,
		`kanmon_relayed_bytes_total{direction="client_to_backend",protocol="imap"} 100`,
		`kanmon_relayed_bytes_total{direction="backend_to_client",protocol="imap"} 2000`,
		`kanmon_lockouts_active{scope="account+ip"} 2`,
		`kanmon_lockouts_active{scope="ip"} 0`,
		`kanmon_build_info{goversion="go1.`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if code, _ := get(t, hs.URL+"/"); code != http.StatusNotFound {
		t.Errorf("GET /: %d, want 404", code)
	}
}

// Each Metrics has a registry of its own: two never share a count.
func TestRegistriesArePrivate(t *testing.T) {
	a, b := New(), New()
	a.Reload(true)
	hs := httptest.NewServer(b.Handler())
	defer hs.Close()
	if _, body := get(t, hs.URL+"/metrics"); strings.Contains(body, "kanmon_reloads_total{") {
		t.Errorf("b shows a's reload:\n%s", body)
	}
}

// A nil *Metrics records nothing and does not panic.
func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	m.Login("imap", ResultOK, "passcode", time.Second)
	m.BackendError("imap", "dial")
	m.ZeroBackendErrors("imap", "dial")
	m.Reload(true)
	m.Refused("imap", "max_connections")
	m.WatchServer(func() ServerStats { return ServerStats{} })
	m.WatchLockouts(func() map[string]int { return nil })
	m.WatchCertificate(func() *tls.Certificate { return nil })
}

// gathered returns the value of the unlabelled metric name in m's
// registry, and whether there is one.
func gathered(t *testing.T, m *Metrics, name string) (float64, bool) {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// The certificate's notAfter shows in Unix seconds, asked at each scrape:
// the one a reload puts in force shows at the next; with none in force
// there is no such metric.
func TestCertificateExpiry(t *testing.T) {
	const name = "kanmon_tls_certificate_expiry_timestamp_seconds"
	m := New()
	if _, ok := gathered(t, m, name); ok {
		t.Errorf("%s without WatchCertificate", name)
	}
	var inForce atomic.Pointer[tls.Certificate]
	m.WatchCertificate(inForce.Load)
	if _, ok := gathered(t, m, name); ok {
		t.Errorf("%s with no certificate in force", name)
	}

	first := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	cert, err := selfsigned.NewUntil(first, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// Without the leaf that tls.LoadX509KeyPair keeps, it is parsed.
	noLeaf := cert.TLS
	noLeaf.Leaf = nil
	inForce.Store(&noLeaf)
	if v, ok := gathered(t, m, name); !ok || v != float64(first.Unix()) {
		t.Errorf("%s = %v (present %v), want %d", name, v, ok, first.Unix())
	}

	renewed := first.AddDate(0, 3, 0)
	inForce.Store(&tls.Certificate{Leaf: &x509.Certificate{NotAfter: renewed}})
	if v, ok := gathered(t, m, name); !ok || v != float64(renewed.Unix()) {
		t.Errorf("after the renewal %s = %v (present %v), want %d", name, v, ok, renewed.Unix())
	}
	hs := httptest.NewServer(m.Handler())
	defer hs.Close()
	if _, body := get(t, hs.URL+"/metrics"); !strings.Contains(body, "\n"+name+" ") {
		t.Errorf("the scrape lacks %s:\n%s", name, body)
	}
}
