package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
	m.Reload(true)
	m.Refused("imap", "max_connections")
	m.WatchServer(func() ServerStats { return ServerStats{} })
	m.WatchLockouts(func() map[string]int { return nil })
}
