// Package metrics holds kanmon's Prometheus metrics, in a registry of
// their own (no package-level globals), and serves them for scraping.
//
// Every label value comes from a fixed set chosen by the caller (a
// protocol, a result, a reason, a kind): never a user name, an address or
// anything else a client sent. All methods of a nil *Metrics do nothing,
// so code that records need not check whether metrics are on.
package metrics

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"sync"
	"time"

	"github.com/kanmon-mail/kanmon/internal/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Login results, the "result" label of kanmon_logins_total.
const (
	ResultOK          = "ok"          // logged in at the backend
	ResultFailed      = "failed"      // the uniform authentication failure
	ResultUnavailable = "unavailable" // a temporary failure: try again later
)

// Directions of kanmon_relayed_bytes_total.
const (
	DirectionIn  = "client_to_backend"
	DirectionOut = "backend_to_client"
)

// authBuckets are the bounds of the login-duration histogram, in seconds:
// from an answer without backend contact to a tarpit's 8 s and a slow
// backend's 15 s timeout.
var authBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20}

// Metrics is kanmon's set of metrics. Create it with New.
type Metrics struct {
	reg           *prometheus.Registry
	logins        *prometheus.CounterVec
	authSeconds   *prometheus.HistogramVec
	backendErrors *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	revoked       prometheus.Counter

	mu       sync.Mutex
	server   func() ServerStats
	lockouts func() map[string]int
	redisUp  func() bool
	dbUp     func() bool
	cert     func() *tls.Certificate
}

// ServerStats is the proxy's state at a scrape, by protocol.
type ServerStats struct {
	// Connections is the number of open client connections, logged in or
	// not, all listeners together.
	Connections int
	// PreAuth is the number of those not logged in yet.
	PreAuth int
	// Stress is whether stress mode is on (pre-auth timeouts shortened).
	Stress bool
	// Sessions counts the logged-in sessions that are relaying.
	Sessions map[string]int
	// BytesIn counts the bytes relayed from clients to backends since
	// the start, BytesOut those from backends to clients; both include
	// the live sessions.
	BytesIn, BytesOut map[string]int64
}

// New returns the metrics, registered in a new registry together with the
// Go runtime and process collectors and kanmon_build_info.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kanmon_logins_total",
			Help: "Login attempts by protocol, result (ok, failed, unavailable) and reason.",
		}, []string{"protocol", "result", "reason"}),
		authSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kanmon_login_duration_seconds",
			Help:    "Time from a login command to its answer (tarpit and backend login included), by protocol and result.",
			Buckets: authBuckets,
		}, []string{"protocol", "result"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kanmon_backend_errors_total",
			Help: "Backend failures by protocol and kind (dial, tls, timeout, master_rejected, login, relay).",
		}, []string{"protocol", "kind"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kanmon_reloads_total",
			Help: "Configuration reloads by result (ok, error).",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kanmon_limit_refusals_total",
			Help: "Connections and logins refused by a cap, by protocol and limit (the config key).",
		}, []string{"protocol", "limit"}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kanmon_sessions_revoked_total",
			Help: "Live sessions closed because their credential no longer stands (a revoked passcode, 2FA turned on or reset), at a reload or a change from the accounts database.",
		}),
	}
	reg.MustRegister(
		m.logins, m.authSeconds, m.backendErrors, m.reloads, m.refusals, m.revoked,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
		(*stateCollector)(m),
	)
	return m
}

// Registry is where the metrics are registered, for tests and for a
// caller that adds its own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics at /metrics in the Prometheus text and
// OpenMetrics formats; any other path is 404.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		Registry:          m.reg, // counts its own errors as promhttp_metric_handler_errors_total
	}))
	return mux
}

// Login records one login attempt and how long its answer took.
func (m *Metrics) Login(protocol, result, reason string, took time.Duration) {
	if m == nil {
		return
	}
	m.logins.WithLabelValues(protocol, result, reason).Inc()
	m.authSeconds.WithLabelValues(protocol, result).Observe(took.Seconds())
}

// BackendError records a failure at a protocol's backend.
func (m *Metrics) BackendError(protocol, kind string) {
	if m == nil {
		return
	}
	m.backendErrors.WithLabelValues(protocol, kind).Inc()
}

// ZeroBackendErrors makes kanmon_backend_errors_total show 0 for each
// of kinds at protocol's backend until its first error. An alert rule's
// rate() or increase() counts only what a series adds after it appears:
// without the 0, the first error of a kind (one master login the backend
// rejects) would go unseen.
func (m *Metrics) ZeroBackendErrors(protocol string, kinds ...string) {
	if m == nil {
		return
	}
	for _, kind := range kinds {
		m.backendErrors.WithLabelValues(protocol, kind)
	}
}

// Reload records a reload and whether it took effect.
func (m *Metrics) Reload(ok bool) {
	if m == nil {
		return
	}
	result := "ok"
	if !ok {
		result = "error"
	}
	m.reloads.WithLabelValues(result).Inc()
}

// Revoked records n live sessions closed because their credential no
// longer stands.
func (m *Metrics) Revoked(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.revoked.Add(float64(n))
}

// RevokedCounter is kanmon_sessions_revoked_total, for tests.
func (m *Metrics) RevokedCounter() prometheus.Counter { return m.revoked }

// Refused records a connection or login refused by the cap named by its
// config key (max_connections, max_preauth_per_ip,
// max_sessions_per_user_ip).
func (m *Metrics) Refused(protocol, limit string) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(protocol, limit).Inc()
}

// WatchServer makes every scrape ask f for the proxy's connections,
// sessions and relayed bytes. The last call wins.
func (m *Metrics) WatchServer(f func() ServerStats) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.server = f
	m.mu.Unlock()
}

// WatchLockouts makes every scrape ask f for the locks in force, by
// scope. The last call wins.
func (m *Metrics) WatchLockouts(f func() map[string]int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.lockouts = f
	m.mu.Unlock()
}

// WatchRedis makes every scrape ask f whether Redis answers, for
// kanmon_redis_up; without a call there is no such metric (one node, no
// [redis]). The last call wins.
func (m *Metrics) WatchRedis(f func() bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.redisUp = f
	m.mu.Unlock()
}

// WatchAccountsDB makes every scrape ask f whether the accounts
// database answers, for kanmon_accounts_db_up; without a call (accounts
// in a file) there is no such metric. The last call wins.
func (m *Metrics) WatchAccountsDB(f func() bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.dbUp = f
	m.mu.Unlock()
}

// WatchCertificate makes every scrape ask f for the certificate in force
// (the [tls] one, which serves the listeners and the portal), for
// kanmon_tls_certificate_expiry_timestamp_seconds, its notAfter. Asked at
// each scrape, f shows a certificate that a reload put in force at the
// next one. While f returns nil (no [tls]), and without a call, there is
// no such metric. The last call wins.
func (m *Metrics) WatchCertificate(f func() *tls.Certificate) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.cert = f
	m.mu.Unlock()
}

// Descriptions of the metrics read at scrape time.
var (
	connectionsDesc = prometheus.NewDesc("kanmon_connections",
		"Open client connections, logged in or not.", nil, nil)
	sessionsDesc = prometheus.NewDesc("kanmon_sessions",
		"Logged-in sessions relaying to a backend, by protocol.", []string{"protocol"}, nil)
	bytesDesc = prometheus.NewDesc("kanmon_relayed_bytes_total",
		"Bytes relayed between clients and backends, by protocol and direction (client_to_backend, backend_to_client).",
		[]string{"protocol", "direction"}, nil)
	preAuthDesc = prometheus.NewDesc("kanmon_preauth_connections",
		"Open client connections not logged in yet.", nil, nil)
	stressDesc = prometheus.NewDesc("kanmon_stress_mode",
		"1 while stress mode is on: so many connections are not logged in yet that their timeouts are shortened.", nil, nil)
	lockoutsDesc = prometheus.NewDesc("kanmon_lockouts_active",
		"Locks in force, by scope (account+ip, account, ip, prefix).", []string{"scope"}, nil)
	dbUpDesc = prometheus.NewDesc("kanmon_accounts_db_up",
		"1 while the accounts database (PostgreSQL) answers; 0 while this node serves logins from its snapshot and refuses changes.", nil, nil)
	redisUpDesc = prometheus.NewDesc("kanmon_redis_up",
		"1 while the Redis of [redis] answers; 0 while this node enforces on its own (on_failure = local) or refuses logins (closed).", nil, nil)
	certExpiryDesc = prometheus.NewDesc("kanmon_tls_certificate_expiry_timestamp_seconds",
		"When the [tls] certificate in force (listeners and portal) expires: its notAfter, in Unix seconds. A reload that loads a renewed certificate moves it.", nil, nil)
)

// stateCollector reads the proxy's and the lockout guard's state at each
// scrape.
type stateCollector Metrics

// Describe sends the descriptions of the metrics Collect sends.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectionsDesc
	ch <- preAuthDesc
	ch <- stressDesc
	ch <- sessionsDesc
	ch <- bytesDesc
	ch <- lockoutsDesc
	ch <- redisUpDesc
	ch <- dbUpDesc
	ch <- certExpiryDesc
}

// Collect asks the watched functions for the current values.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	server, lockouts, cert := c.server, c.lockouts, c.cert
	ups := map[*prometheus.Desc]func() bool{redisUpDesc: c.redisUp, dbUpDesc: c.dbUp}
	c.mu.Unlock()
	if cert != nil {
		if leaf := leafOf(cert()); leaf != nil {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()))
		}
	}
	for desc, f := range ups {
		if f == nil {
			continue
		}
		up := 0.0
		if f() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, up)
	}
	if server != nil {
		st := server()
		ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(st.Connections))
		ch <- prometheus.MustNewConstMetric(preAuthDesc, prometheus.GaugeValue, float64(st.PreAuth))
		stress := 0.0
		if st.Stress {
			stress = 1
		}
		ch <- prometheus.MustNewConstMetric(stressDesc, prometheus.GaugeValue, stress)
		for proto, n := range st.Sessions {
			ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(n), proto)
		}
		for proto, n := range st.BytesIn {
			ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(n), proto, DirectionIn)
		}
		for proto, n := range st.BytesOut {
			ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(n), proto, DirectionOut)
		}
	}
	if lockouts != nil {
		for scope, n := range lockouts() {
			ch <- prometheus.MustNewConstMetric(lockoutsDesc, prometheus.GaugeValue, float64(n), scope)
		}
	}
}

// leafOf returns the parsed leaf of c: the one tls.LoadX509KeyPair keeps,
// else parsed from the chain's first certificate. It is nil when c is nil
// or its leaf does not parse.
func leafOf(c *tls.Certificate) *x509.Certificate {
	switch {
	case c == nil:
		return nil
	case c.Leaf != nil:
		return c.Leaf
	case len(c.Certificate) == 0:
		return nil
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// buildInfo is kanmon_build_info, always 1, labelled with what
// package buildinfo knows of the binary: its version, commit and Go
// version.
func buildInfo() prometheus.Collector {
	bi := buildinfo.Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kanmon_build_info",
		Help:        "Always 1; the labels say which kanmon this is.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Commit, "goversion": bi.GoVersion},
	})
	g.Set(1)
	return g
}
