package proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// scrape fetches url (a /metrics page in the Prometheus text format) and
// returns its samples by series, as written: name{label="value",...}. It
// fails on a label that carries a user name.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", line, err)
		}
		out[line[:i]] = v
		if strings.HasPrefix(line, "kanmon_") && (strings.Contains(line, "alice") || strings.Contains(line, "carol")) {
			t.Errorf("a metric names a user: %q", line)
		}
	}
	return out
}

// wantSamples checks series against their expected values; a negative
// want means "more than zero".
func wantSamples(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for series, w := range want {
		v, ok := got[series]
		switch {
		case !ok:
			t.Errorf("no series %s", series)
		case w < 0 && v <= 0:
			t.Errorf("%s = %v, want > 0", series, v)
		case w >= 0 && v != w:
			t.Errorf("%s = %v, want %v", series, v, w)
		}
	}
}

// A scrape over HTTP after logins of every kind shows them by protocol,
// result and reason, with the sessions, bytes, lockouts and refusals that
// followed.
func TestMetricsScrapeAfterLogins(t *testing.T) {
	w := newCapsWorld(t, "max_sessions_per_user_ip = 1\n")
	hs := httptest.NewServer(w.k.Metrics.Handler())
	t.Cleanup(hs.Close)

	imap := dial(t, w.k.IMAPPlain)
	imap.run("S: "+capIMAPGreeting, "C: a1 LOGIN alice "+w.passcode, "S: a1 OK ...", "C: a2 SELECT INBOX", "S*: a2 OK ...")
	pop3 := dial(t, w.k.POP3Plain)
	pop3.run("S: "+pop3Greeting, "C: USER carol", "S: +OK ...", "C: PASS "+carolPW, "S: +OK Logged in.", "C: STAT", "S: +OK ...")
	bad := dial(t, w.k.IMAPPlain)
	bad.run("S: "+capIMAPGreeting,
		"C: b1 LOGIN alice "+alicePW, "S: b1 "+failedReply, // not a passcode
		"C: b2 LOGIN alice AAAABBBBCCCCDDDD", "S: b2 "+failedReply, // no passcode matches
		"C: b3 LOGIN alice "+w.passcode, "S: b3 "+capIMAPSessionLimit,
	)
	badPOP3 := dial(t, w.k.POP3Plain)
	badPOP3.run("S: "+pop3Greeting, "C: USER dave", "S: +OK ...", "C: PASS wrong-pw", "S: "+pop3Failed)

	got := scrape(t, hs.URL+"/metrics")
	wantSamples(t, got, map[string]float64{
		`kanmon_logins_total{protocol="imap",reason="passcode",result="ok"}`:             2,
		`kanmon_logins_total{protocol="imap",reason="not_passcode",result="failed"}`:     1,
		`kanmon_logins_total{protocol="imap",reason="no_match",result="failed"}`:         1,
		`kanmon_logins_total{protocol="pop3",reason="passthrough_trusted",result="ok"}`:  1,
		`kanmon_logins_total{protocol="pop3",reason="backend_rejected",result="failed"}`: 1,
		`kanmon_login_duration_seconds_count{protocol="imap",result="ok"}`:               2,
		`kanmon_login_duration_seconds_count{protocol="imap",result="failed"}`:           2,
		`kanmon_login_duration_seconds_bucket{protocol="imap",result="ok",le="+Inf"}`:    2,
		`kanmon_limit_refusals_total{limit="max_sessions_per_user_ip",protocol="imap"}`:  1,
		`kanmon_sessions{protocol="imap"}`:                                               1,
		`kanmon_sessions{protocol="pop3"}`:                                               1,
		`kanmon_sessions{protocol="submission"}`:                                         0,
		`kanmon_connections`:                                                             4,
		`kanmon_relayed_bytes_total{direction="client_to_backend",protocol="imap"}`:      -1,
		`kanmon_relayed_bytes_total{direction="backend_to_client",protocol="imap"}`:      -1,
		`kanmon_relayed_bytes_total{direction="backend_to_client",protocol="pop3"}`:      -1,
		`kanmon_lockouts_active{scope="account+ip"}`:                                     0,
		`kanmon_lockouts_active{scope="prefix"}`:                                         0,
	})
	var build bool
	for series, v := range got {
		if strings.HasPrefix(series, "kanmon_build_info{") && strings.Contains(series, `goversion="go1.`) && v == 1 {
			build = true
		}
	}
	if !build {
		t.Error("no kanmon_build_info with the Go version")
	}

	// An ended session keeps its bytes; the gauge goes down.
	before := got[`kanmon_relayed_bytes_total{direction="backend_to_client",protocol="pop3"}`]
	pop3.run("C: QUIT", "S: +OK ...", "EOF")
	pop3.conn.Close()
	capWaitFor(t, "the POP3 session to end", func() bool {
		return scrape(t, hs.URL+"/metrics")[`kanmon_sessions{protocol="pop3"}`] == 0
	})
	got = scrape(t, hs.URL+"/metrics")
	if after := got[`kanmon_relayed_bytes_total{direction="backend_to_client",protocol="pop3"}`]; after <= before {
		t.Errorf("POP3 bytes went from %v to %v after the session ended, want more", before, after)
	}
	resp, err := http.Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / = %d, want 404", resp.StatusCode)
	}
}

// Locks in force show by scope; a backend that cannot be reached shows as
// a backend error and an unavailable login. Every kind of backend error
// shows from the start, at 0 until it happens, so that an alert's
// increase() sees the first one.
func TestMetricsLockoutsAndBackendErrors(t *testing.T) {
	k := kanmontest.Start(t, kanmontest.Options{
		IMAPBackend:    deadAddr(t),
		MasterUser:     masterUser,
		MasterPassword: masterPW,
		Passcodes:      map[string][]string{"alice": {app}},
		Lockout:        kanmontest.DefaultLockout + "account_ip_threshold = 2\n",
	})
	hs := httptest.NewServer(k.Metrics.Handler())
	t.Cleanup(hs.Close)
	wantSamples(t, scrape(t, hs.URL+"/metrics"), map[string]float64{
		`kanmon_backend_errors_total{kind="dial",protocol="imap"}`:            0,
		`kanmon_backend_errors_total{kind="master_rejected",protocol="imap"}`: 0,
	})
	c := dial(t, k.IMAPPlain)
	c.run("S: "+capIMAPGreeting,
		"C: a1 LOGIN alice "+k.Passcode("alice", app), "S: a1 "+unavailReply,
		"C: a2 LOGIN alice wrong-1", "S: a2 "+failedReply,
	)
	c = dial(t, k.IMAPPlain)
	c.run("S: "+capIMAPGreeting,
		"C: b1 LOGIN alice wrong-2", "S: b1 "+failedReply,
		"C: b2 LOGIN alice wrong-3", "S: b2 "+failedReply, // locked
	)
	wantSamples(t, scrape(t, hs.URL+"/metrics"), map[string]float64{
		`kanmon_backend_errors_total{kind="dial",protocol="imap"}`:                               1,
		`kanmon_backend_errors_total{kind="master_rejected",protocol="imap"}`:                    0,
		`kanmon_logins_total{protocol="imap",reason="backend_unavailable",result="unavailable"}`: 1,
		`kanmon_logins_total{protocol="imap",reason="not_passcode",result="failed"}`:             2,
		`kanmon_logins_total{protocol="imap",reason="locked_account_ip",result="failed"}`:        1,
		`kanmon_lockouts_active{scope="account+ip"}`:                                             1,
		`kanmon_lockouts_active{scope="account"}`:                                                0,
	})
}
