package proxy

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/metrics"
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

// Reasons of a login that is not a plain failure or success, beside the
// policy's and the lockout guard's (see loginReasons).
const (
	reasonLabelLockoutUnavailable = "lockout_unavailable"
	reasonLabelBackendUnavailable = "backend_unavailable"
	reasonLabelOther              = "other"
)

// loginReasons maps the reasons of the log (auth.Reason*, lockout
// verdicts, reasonBackendRejected) to the "reason" label of
// kanmon_logins_total. A reason not listed is counted as "other".
var loginReasons = func() map[string]string {
	m := map[string]string{
		auth.ReasonEmptyUser:      "empty_user",
		auth.ReasonEmptySecret:    "empty_secret",
		auth.ReasonNotPasscode:    "not_passcode",
		auth.ReasonNoMatch:        "no_match",
		auth.ReasonNoPasscodes:    "no_passcodes",
		auth.ReasonOutOfScope:     "out_of_scope",
		auth.ReasonOutside:        "outside",
		auth.ReasonPasscode:       "passcode",
		auth.ReasonTrusted:        "passthrough_trusted",
		auth.ReasonOutsideAllowed: "passthrough_outside",
		reasonBackendRejected:     "backend_rejected",
	}
	m[lockout.Verdict{Outcome: lockout.Stale}.String()] = "stale_secret"
	for scope, label := range map[lockout.Scope]string{
		lockout.ScopeAccountIP: "locked_account_ip",
		lockout.ScopeAccount:   "locked_account",
		lockout.ScopeIP:        "locked_ip",
		lockout.ScopePrefix:    "locked_prefix",
	} {
		m[lockout.Verdict{Outcome: lockout.Locked, Scope: scope}.String()] = label
	}
	return m
}()

// reasonLabel is the metrics label of a log reason.
func reasonLabel(reason string) string {
	if l, ok := loginReasons[reason]; ok {
		return l
	}
	return reasonLabelOther
}

// backendErrKind sorts a failed backend login into a kind.
func backendErrKind(le *LoginError) string {
	var ne net.Error
	switch {
	case errors.As(le, &ne) && ne.Timeout(), errors.Is(le, context.DeadlineExceeded):
		return backendErrTimeout
	case strings.Contains(le.Detail, "dial"):
		return backendErrDial
	case strings.Contains(le.Detail, "TLS") || strings.Contains(le.Detail, "STLS"):
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
	st := metrics.ServerStats{
		Connections: s.limits.connections(),
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
		st.BytesIn[ls.protocol] += ls.tap.up.Load()
		st.BytesOut[ls.protocol] += ls.tap.down.Load()
	}
	for proto := range s.current.Load().Backends {
		st.Sessions[proto] += 0 // a protocol served shows 0, not nothing
	}
	return st
}
