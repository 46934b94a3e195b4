package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

// session is what every protocol front knows about its connection.
type session struct {
	// ctx ends when the server shuts down; handle then interrupts any
	// pre-auth read (see preAuthDeadline).
	ctx      context.Context
	srv      *Server
	rt       *Runtime
	spec     config.Listener
	conn     net.Conn
	clientIP netip.Addr
	log      *slog.Logger
	// tls is true once the client connection is encrypted.
	tls bool
	// failures counts bad and failed pre-auth commands.
	failures int
}

// maxPreAuthFailures is how many bad or failed commands a client gets
// before the connection is closed (the habit of Dovecot and mox; RFC 9051
// leaves it to the server).
const maxPreAuthFailures = 3

// fail counts a bad or failed command and reports whether the client has
// used up its allowance.
func (s *session) fail() bool {
	s.failures++
	return s.failures >= maxPreAuthFailures
}

// authAllowed reports whether credentials may be sent on this connection:
// after TLS, or on a listener explicitly configured as plaintext.
func (s *session) authAllowed() bool {
	return s.tls || s.spec.TLS == config.TLSNone
}

// goodbyeTimeout bounds the last line written after a read failed on its
// deadline (idle client, shutdown): the connection needs a fresh one.
const goodbyeTimeout = 2 * time.Second

// preAuthDeadline arms the pre-auth idle timeout for the next exchange.
// After shutdown began it arms an expired read deadline instead: handle
// interrupts reads when ctx ends, and this keeps a deadline set just after
// that from undoing it.
func (s *session) preAuthDeadline() {
	_ = s.conn.SetDeadline(time.Now().Add(s.rt.Config.PreAuthTimeout.Duration))
	if s.shuttingDown() {
		_ = s.conn.SetReadDeadline(time.Now())
	}
}

// shuttingDown reports whether the server is shutting down.
func (s *session) shuttingDown() bool { return s.ctx != nil && contextDone(s.ctx) }

// goodbyeDeadline gives the connection time to write a last line after a
// read deadline expired (a deadline set by SetDeadline covers writes too).
func (s *session) goodbyeDeadline() {
	_ = s.conn.SetWriteDeadline(time.Now().Add(goodbyeTimeout))
}

// loginOutcome is what the client is told after a login attempt.
type loginOutcome int

const (
	// outcomeFailed: the one uniform authentication-failed reply.
	outcomeFailed loginOutcome = iota
	// outcomeUnavailable: a temporary failure, try again later.
	outcomeUnavailable
)

// decide asks the policy about user/secret and returns the decision and
// the backend credentials to use. ok is false for a refusal, which has been
// logged.
func (s *session) decide(user, secret string) (auth.Decision, Credentials, bool) {
	d := s.rt.Policy.Decide(auth.Attempt{User: user, Secret: secret, ClientIP: s.clientIP, Protocol: s.spec.Protocol})
	switch d.Kind {
	case auth.Passcode:
		b := s.rt.Backends[s.spec.Protocol]
		return d, b.MasterCredentials(d.User), true
	case auth.Passthrough:
		return d, Credentials{Authcid: d.User, Password: secret}, true
	}
	s.log.Info("login refused", "user", user, "reason", d.Reason)
	return d, Credentials{}, false
}

// backendFailed logs a failed backend login and says what the client
// should be told. A rejected master login is a server misconfiguration:
// it is logged as an error and the client sees a temporary failure.
func (s *session) backendFailed(d auth.Decision, err error) loginOutcome {
	var le *LoginError
	if !errors.As(err, &le) {
		le = unavailable("backend login", err)
	}
	switch {
	case d.Kind == auth.Passthrough && le.AuthFailed:
		s.log.Info("login refused", "user", d.User, "reason", "backend rejected the password", "detail", le.Detail)
		return outcomeFailed
	case d.Kind == auth.Passcode && le.AuthFailed:
		s.log.Error("BACKEND REJECTED THE MASTER LOGIN: check master_user/master_password and the backend's master-user setup, and that the user exists there",
			"user", d.User, "app", d.App, "master_user", s.rt.Backends[s.spec.Protocol].MasterUser, "detail", le.Detail)
		return outcomeUnavailable
	}
	s.log.Warn("backend unavailable", "user", d.User, "err", le.Error())
	return outcomeUnavailable
}

// loggedIn logs a successful login.
func (s *session) loggedIn(d auth.Decision) *slog.Logger {
	log := s.log.With("user", d.User, "via", d.Kind.String())
	if d.App != "" {
		log = log.With("app", d.App)
	}
	log.Info("login")
	return log
}

// relay hands the session over to the byte relay and logs its end.
func (s *session) relay(ctx context.Context, log *slog.Logger, client, backend Endpoint) {
	start := time.Now()
	stats, err := Relay(ctx, client, backend, RelayOptions{Idle: s.rt.Config.IdleTimeout.Duration, Buffers: s.srv.buffers})
	attrs := []any{"duration", time.Since(start).Round(time.Millisecond), "bytes_in", stats.ClientToBackend, "bytes_out", stats.BackendToClient}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	log.Info("session ended", attrs...)
}
