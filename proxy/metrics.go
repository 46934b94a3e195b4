package proxy

import (
	"context"
	"errors"
	"net"

	"github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// What the proxy tells package metrics. Every label value comes from the
// fixed sets below, never from what a client sent.

// Kinds of backend error, the "kind" label of kanmon_backend_errors_total.
const (
	backendErrDial           = "dial"            // could not connect
	backendErrTLS            = "tls"             // TLS or STARTTLS failed
	backendErrTimeout        = "timeout"         // the login took longer than the backend's timeout
	backendErrMasterRejected = "master_rejected" // the backend refused kanmon's master login
	backendErrLogin          = "login"           // any other failure while logging in
	backendErrRelay          = "relay"           // a relayed session ended on an I/O error
)

// backendErrKinds are all the kinds, each shown at 0 from the start.
var backendErrKinds = []string{
	backendErrDial, backendErrTLS, backendErrTimeout, backendErrMasterRejected, backendErrLogin, backendErrRelay,
}

// backendErrKind sorts a failed backend login into a kind.
func backendErrKind(le *backend.LoginError) string {
	var ne net.Error
	switch {
	case errors.As(le, &ne) && ne.Timeout(), errors.Is(le, context.DeadlineExceeded):
		return backendErrTimeout
	case le.Stage == backend.StageDial:
		return backendErrDial
	case le.Stage == backend.StageTLS:
		return backendErrTLS
	}
	return backendErrLogin
}

// stats is the server's state for a metrics scrape: open connections,
// live sessions by protocol, and the bytes relayed by the sessions that
// have ended and by the live ones. Under the registry's lock a session is
// counted either live or ended, never both, so the byte counters never go
// back.
func (s *Server) stats() metrics.ServerStats {
	preAuth, stressed := s.limits.preAuthCounts()
	st := metrics.ServerStats{
		Connections: s.limits.connections(),
		PreAuth:     preAuth,
		Stress:      stressed,
		Sessions:    map[string]int{},
		BytesIn:     map[string]int64{},
		BytesOut:    map[string]int64{},
	}
	r := &s.sessions
	r.mu.Lock()
	defer r.mu.Unlock()
	for proto, b := range r.ended {
		st.BytesIn[proto] += b[0]
		st.BytesOut[proto] += b[1]
	}
	for ls := range r.live {
		st.Sessions[ls.protocol]++
		st.BytesIn[ls.protocol] += ls.tap.bytes.ClientToBackend.Load()
		st.BytesOut[ls.protocol] += ls.tap.bytes.BackendToClient.Load()
	}
	for proto := range s.current.Load().Backends {
		st.Sessions[proto] += 0 // a protocol served shows 0, not nothing
	}
	return st
}
