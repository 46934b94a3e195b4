package proxy

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy/backend"
	"github.com/kanmon-mail/kanmon/proxy/relay"
	"github.com/kanmon-mail/kanmon/username"
)

// loginOutcome is what the client is told after a login attempt.
type loginOutcome int

const (
	// outcomeOK: logged in at the backend; relay from here.
	outcomeOK loginOutcome = iota
	// outcomeFailed: the one uniform authentication-failed reply.
	outcomeFailed
	// outcomeUnavailable: a temporary failure, try again later.
	outcomeUnavailable
)

// loginResult is how a login attempt ended.
type loginResult struct {
	outcome loginOutcome
	// log is the session's logger from here on, carrying user and
	// method; set with outcomeOK.
	log *slog.Logger
	// backend is the logged-in backend connection; set with outcomeOK.
	backend *backend.Login
	// clientLine is the backend's own refusal to pass on in place of the
	// dialect's unavailable reply (backend.LoginError.ClientLine).
	clientLine string
}

// authenticate runs one login attempt from start to end, the same for
// every protocol:
//
//  0. the canonical account name ([users]): every step below, and the
//     backend, use it; a name [users] refuses fails here;
//  1. the lockout check, before any backend contact: a locked scope or a
//     remembered wrong secret fails here, and a lockout database that
//     cannot be trusted fails closed (unavailable);
//  2. the policy decision (passcode, passthrough, or refuse);
//  3. the backend login;
//  4. the bookkeeping: definite failures are counted, successes clear
//     the account's stale secrets, every failure waits out the tarpit,
//     and one log line says what happened (never the secret). A passcode
//     login records the passcode's last use.
//
// On success it returns the session's logger, carrying user and method,
// and the logged-in backend connection, and keeps the decision in the
// session (s.admitted) for the session registry, which its relay joins.
func (s *session) authenticate(ctx context.Context, typed, secret string) loginResult {
	start := time.Now()
	user, reason, err := s.accountName(typed)
	if reason != auth.ReasonNone {
		var extra []any
		if err != nil {
			extra = []any{"detail", err.Error()}
		}
		var info *lockout.FailureInfo
		if s.srv.guard != nil {
			fi := s.srv.guard.FailureAddress(s.clientIP)
			info = &fi
		}
		s.loginFailed(ctx, start, typed, reason, info, extra...)
		return loginResult{outcome: outcomeFailed}
	}
	guard := s.srv.guard
	stale := false
	locked := lockout.ScopeNone // a lock a right passcode passes
	if guard != nil {
		v := guard.Check(user, s.clientIP, secret)
		switch v.Outcome {
		case lockout.Unavailable:
			s.log.Error("lockout state unavailable; refusing logins until it recovers", "user", user, "err", v.Err)
			s.srv.metrics.Login(s.spec.Protocol, metrics.ResultUnavailable, auth.ReasonLockoutUnavailable.Label(), time.Since(start))
			return loginResult{outcome: outcomeUnavailable}
		case lockout.Locked:
			// A lock refuses wrong secrets only. For a 2FA account the
			// secret is checked here, without the backend: a right
			// passcode (75 bits, kanmon-made: nothing to guess) logs in
			// under any lock, so nobody can lock the real user out; all
			// else gets the same failure as before, uncounted.
			if !s.rt.Policy.TwoFA(user) {
				s.loginFailed(ctx, start, user, lockedReason(v.Scope), nil)
				return loginResult{outcome: outcomeFailed}
			}
			locked = v.Scope
		case lockout.Stale:
			// A remembered wrong secret is refused without asking the
			// backend. A 2FA account's secret is checked here, not at
			// the backend, so check it again: a passcode tried before
			// the admin's reload must work after it. Either way it is
			// not counted twice.
			if !s.rt.Policy.TwoFA(user) {
				s.loginFailed(ctx, start, user, auth.ReasonStale, nil)
				return loginResult{outcome: outcomeFailed}
			}
			stale = true
		}
	}
	d := s.rt.Policy.Decide(auth.Attempt{User: user, Secret: secret, ClientIP: s.clientIP, Protocol: s.spec.Protocol})
	b := s.rt.Backends[s.spec.Protocol]
	var cred backend.Credentials
	switch d.Kind {
	case auth.Passcode:
		cred = b.MasterCredentials(d.User)
	case auth.Passthrough:
		cred = backend.Credentials{Authcid: d.User, Password: secret}
	default:
		var extra []any
		if d.App != "" {
			extra = []any{"app", d.App} // a passcode used outside its scope
		}
		if d.Reason == auth.ReasonNotPasscode {
			s.noteClient(auth.ClientRefused, user)
		}
		switch {
		case locked != lockout.ScopeNone:
			s.loginFailed(ctx, start, user, lockedReason(locked), nil, extra...)
		case stale:
			s.loginFailed(ctx, start, user, auth.ReasonStale, nil, extra...)
		default:
			s.loginFailed(ctx, start, user, d.Reason, s.countFailure(d.Reason, user, secret), extra...)
		}
		return loginResult{outcome: outcomeFailed}
	}
	cred.Client = s.clientInfo()

	var login *backend.Login
	if d.Kind == auth.Passthrough {
		var shared bool
		login, shared, err = s.passthroughLogin(ctx, b, cred, secret)
		if shared {
			// Counted once, for the attempt that asked.
			s.loginFailed(ctx, start, d.User, auth.ReasonCoalesced, nil)
			return loginResult{outcome: outcomeFailed}
		}
	} else {
		login, err = b.Login(ctx, cred)
	}
	if err != nil {
		var le *backend.LoginError
		if !errors.As(err, &le) {
			le = &backend.LoginError{Detail: "backend login", Err: err}
		}
		switch {
		case d.Kind == auth.Passthrough && le.AuthFailed:
			s.loginFailed(ctx, start, d.User, auth.ReasonBackendRejected, s.countFailure(auth.ReasonBackendRejected, d.User, secret), "detail", le.Detail)
			return loginResult{outcome: outcomeFailed}
		case d.Kind == auth.Passcode && le.AuthFailed:
			s.log.Error("BACKEND REJECTED THE MASTER LOGIN: check master_user/master_password and the backend's master-user setup, and that the user exists there",
				"user", d.User, "app", d.App, "master_user", b.MasterUser, "detail", le.Detail)
			s.srv.metrics.BackendError(s.spec.Protocol, backendErrMasterRejected)
		default:
			s.log.Warn("backend unavailable", "user", d.User, "err", le.Error())
			s.srv.metrics.BackendError(s.spec.Protocol, backendErrKind(le))
		}
		s.srv.metrics.Login(s.spec.Protocol, metrics.ResultUnavailable, auth.ReasonBackendUnavailable.Label(), time.Since(start))
		return loginResult{outcome: outcomeUnavailable, clientLine: le.ClientLine}
	}

	if guard != nil {
		guard.Success(d.User, s.clientIP)
	}
	s.admitted = &d
	switch d.Kind {
	case auth.Passcode:
		if s.srv.lastUse != nil {
			s.srv.lastUse.Record(d.PasscodeID(), auth.LastUse{
				User: d.User, App: d.App, Time: time.Now().UTC(),
				ClientIP: s.clientIP.String(), Protocol: s.spec.Protocol, Client: s.clientID,
			})
		}
		if s.srv.clients != nil {
			s.srv.clients.Forget(d.User, s.passwordClient())
		}
	case auth.Passthrough:
		s.noteClient(auth.ClientPassword, d.User)
	}
	attrs := []any{"user", d.User, "via", d.Kind.String()}
	if d.App != "" {
		attrs = append(attrs, "app", d.App)
	}
	if s.clientID != "" {
		attrs = append(attrs, "client_id", s.clientID)
	}
	log := s.log.With(attrs...) // one handler copy for the session's lines
	log.Info("login")
	s.srv.metrics.Login(s.spec.Protocol, metrics.ResultOK, d.Reason.Label(), time.Since(start))
	return loginResult{outcome: outcomeOK, log: log, backend: login}
}

// accountName is the canonical account name for the name the client
// typed, or the reason it is refused: a name [users] refuses, or a name
// that keeps a domain ([users] lists none, or it is in other_domains)
// while the name before the "@" is a 2FA account: a backend that strips
// domains would log that account in with its password. An empty name is
// left for the policy to refuse.
func (s *session) accountName(typed string) (string, auth.Reason, error) {
	if typed == "" {
		return "", auth.ReasonNone, nil
	}
	names := s.rt.Config.Users.Names
	name, err := names.Canonical(typed)
	if err != nil {
		return "", auth.ReasonUserName, err
	}
	if local, hasDomain := username.Local(name); hasDomain && s.rt.Policy.TwoFA(local) {
		return "", auth.ReasonUnknownDomain, nil
	}
	return name, auth.ReasonNone, nil
}

// lockedReason is the reason of a login refused by a lock on scope.
func lockedReason(scope lockout.Scope) auth.Reason {
	switch scope {
	case lockout.ScopeAccountIP:
		return auth.ReasonLockedAccountIP
	case lockout.ScopeAccount:
		return auth.ReasonLockedAccount
	case lockout.ScopeIP:
		return auth.ReasonLockedIP
	}
	return auth.ReasonLockedPrefix
}

// countFailure records a definite authentication failure with the lockout
// guard and returns its counts for the log, or nil when the failure is not
// one to count: only a wrong secret the policy or the backend was sure
// about counts. An outside-the-campus refusal says nothing about the
// password, and an empty user or secret is a client bug.
func (s *session) countFailure(reason auth.Reason, user, secret string) *lockout.FailureInfo {
	if s.srv.guard == nil || !reason.Counts() {
		return nil
	}
	info := s.srv.guard.Failure(user, s.clientIP, secret)
	return &info
}

// loginFailed logs one failed login in a stable shape a fail2ban filter can
// match (msg="login failed" proto=… client=… user=… reason=…), then waits
// out the tarpit, measured from the start of the attempt so a refusal
// without backend contact takes as long as one with it.
func (s *session) loginFailed(ctx context.Context, start time.Time, user string, reason auth.Reason, info *lockout.FailureInfo, extra ...any) {
	attrs := append([]any{"user", user, "reason", reason.String()}, extra...)
	if info != nil {
		attrs = append(attrs, "lockout", *info)
	}
	s.log.Info("login failed", attrs...)
	defer func() {
		s.srv.metrics.Login(s.spec.Protocol, metrics.ResultFailed, reason.Label(), time.Since(start))
	}()
	if s.srv.guard == nil {
		return
	}
	wait := s.srv.guard.Delay(s.failures+1) - time.Since(start)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// A front is one protocol's pre-auth conversation as the shared login
// steps see it: how it answers the command in progress.
type front interface {
	// refuse answers the command in progress with line and counts the
	// failure; true means the connection must close.
	refuse(line string) bool
	// reply answers the command in progress with line.
	reply(line string) error
	// loggedIn is the line that tells the client its login succeeded.
	loggedIn(b *backend.Login) string
	// reader holds what the client pipelined past its login.
	reader() *bufio.Reader
}

// login runs one login attempt for f and answers it, the same way for
// every protocol: the dialect's failed or unavailable reply (or the
// backend's own refusal, where it passes one on), the session-limit
// refusal, or f's success line followed by the relay. It reports
// whether the front is done.
func (s *session) login(ctx context.Context, f front, user, secret string) bool {
	res := s.authenticate(ctx, user, secret)
	switch res.outcome {
	case outcomeFailed:
		return f.refuse(s.dialect.failed)
	case outcomeUnavailable:
		if res.clientLine != "" {
			return f.refuse(res.clientLine)
		}
		return f.refuse(s.dialect.unavailable)
	}
	if !s.admitSession() {
		res.backend.Conn.Close()
		return f.reply(s.dialect.sessionLimit) != nil
	}
	if err := f.reply(f.loggedIn(res.backend)); err != nil {
		res.backend.Conn.Close()
		return true
	}
	s.relay(ctx, res.log, s.clientEndpoint(f.reader()), relay.Endpoint{Conn: res.backend.Conn, Pending: res.backend.Pending})
	return true
}

// passwordClient describes the session's client for the password-client
// records (never the secret it sent).
func (s *session) passwordClient() auth.PasswordClient {
	return auth.PasswordClient{
		Protocol: s.spec.Protocol, Name: s.clientName, Version: s.clientVersion,
		IP: s.clientIP.String(), Last: time.Now().UTC(), Count: 1,
	}
}

// noteClient records the session's client in user's record of kind: a
// 2FA account's login refused for presenting its password, or a
// passthrough login of an account without 2FA.
func (s *session) noteClient(kind auth.ClientKind, user string) {
	if s.srv.clients != nil && user != "" {
		s.srv.clients.Seen(kind, user, s.passwordClient())
	}
}
