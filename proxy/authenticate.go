package proxy

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/metrics"
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

// backendLogin logs into the protocol's backend with cred. It is the one
// protocol-specific step of authenticate; it keeps what it needs (the
// connection, capabilities) in its closure.
type backendLogin func(ctx context.Context, b *Backend, cred Credentials) error

// reasonBackendRejected is the log reason when the backend refused a
// passthrough password.
const reasonBackendRejected = "backend rejected the password"

// authenticate runs one login attempt from start to end, the same for
// every protocol:
//
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
// and keeps the decision in the session (s.admitted) for the session
// registry, which its relay joins.
func (s *session) authenticate(ctx context.Context, user, secret string, login backendLogin) (loginOutcome, *slog.Logger) {
	start := time.Now()
	guard := s.srv.guard
	stale := false
	if guard != nil {
		v := guard.Check(user, s.clientIP, secret)
		switch v.Outcome {
		case lockout.Unavailable:
			s.log.Error("lockout state unavailable; refusing logins until it recovers", "user", user, "err", v.Err)
			s.srv.metrics.Login(s.spec.Protocol, metrics.ResultUnavailable, reasonLabelLockoutUnavailable, time.Since(start))
			return outcomeUnavailable, nil
		case lockout.Locked:
			s.loginFailed(ctx, start, user, v.String(), nil)
			return outcomeFailed, nil
		case lockout.Stale:
			// A remembered wrong secret is refused without asking the
			// backend. A 2FA account's secret is checked here, not at
			// the backend, so check it again: a passcode tried before
			// the admin's reload must work after it. Either way it is
			// not counted twice.
			if !s.rt.Policy.TwoFA(user) {
				s.loginFailed(ctx, start, user, v.String(), nil)
				return outcomeFailed, nil
			}
			stale = true
		}
	}
	d := s.rt.Policy.Decide(auth.Attempt{User: user, Secret: secret, ClientIP: s.clientIP, Protocol: s.spec.Protocol})
	b := s.rt.Backends[s.spec.Protocol]
	var cred Credentials
	switch d.Kind {
	case auth.Passcode:
		cred = b.MasterCredentials(d.User)
	case auth.Passthrough:
		cred = Credentials{Authcid: d.User, Password: secret}
	default:
		var extra []any
		if d.App != "" {
			extra = []any{"app", d.App} // a passcode used outside its scope
		}
		if stale {
			s.loginFailed(ctx, start, user, lockout.Verdict{Outcome: lockout.Stale}.String(), nil, extra...)
		} else {
			s.loginFailed(ctx, start, user, d.Reason, s.countFailure(d.Reason, user, secret), extra...)
		}
		return outcomeFailed, nil
	}
	cred.Client = s.clientInfo()

	err := login(ctx, b, cred)
	if err != nil {
		var le *LoginError
		if !errors.As(err, &le) {
			le = unavailable("backend login", err)
		}
		switch {
		case d.Kind == auth.Passthrough && le.AuthFailed:
			s.loginFailed(ctx, start, d.User, reasonBackendRejected, s.countFailure(reasonBackendRejected, d.User, secret), "detail", le.Detail)
			return outcomeFailed, nil
		case d.Kind == auth.Passcode && le.AuthFailed:
			s.log.Error("BACKEND REJECTED THE MASTER LOGIN: check master_user/master_password and the backend's master-user setup, and that the user exists there",
				"user", d.User, "app", d.App, "master_user", b.MasterUser, "detail", le.Detail)
			s.srv.metrics.BackendError(s.spec.Protocol, backendErrMasterRejected)
		default:
			s.log.Warn("backend unavailable", "user", d.User, "err", le.Error())
			s.srv.metrics.BackendError(s.spec.Protocol, backendErrKind(le))
		}
		s.srv.metrics.Login(s.spec.Protocol, metrics.ResultUnavailable, reasonLabelBackendUnavailable, time.Since(start))
		return outcomeUnavailable, nil
	}

	if guard != nil {
		guard.Success(d.User, s.clientIP)
	}
	s.admitted = &d
	if d.Kind == auth.Passcode {
		s.srv.lastUse.Record(d.PasscodeID(), auth.LastUse{
			User: d.User, App: d.App, Time: time.Now().UTC(),
			ClientIP: s.clientIP.String(), Protocol: s.spec.Protocol, Client: s.clientID,
		})
	}
	log := s.log.With("user", d.User, "via", d.Kind.String())
	if d.App != "" {
		log = log.With("app", d.App)
	}
	log.Info("login")
	s.srv.metrics.Login(s.spec.Protocol, metrics.ResultOK, reasonLabel(d.Reason), time.Since(start))
	return outcomeOK, log
}

// countFailure records a definite authentication failure with the lockout
// guard and returns its counts for the log, or nil when the failure is not
// one to count: only a wrong secret the policy or the backend was sure
// about counts. An outside-the-campus refusal says nothing about the
// password, and an empty user or secret is a client bug.
func (s *session) countFailure(reason, user, secret string) *lockout.FailureInfo {
	if s.srv.guard == nil {
		return nil
	}
	switch reason {
	case auth.ReasonNotPasscode, auth.ReasonNoMatch, auth.ReasonNoPasscodes, auth.ReasonOutOfScope, reasonBackendRejected:
		info := s.srv.guard.Failure(user, s.clientIP, secret)
		return &info
	}
	return nil
}

// loginFailed logs one failed login in a stable shape a fail2ban filter can
// match (msg="login failed" proto=… client=… user=… reason=…), then waits
// out the tarpit, measured from the start of the attempt so a refusal
// without backend contact takes as long as one with it.
func (s *session) loginFailed(ctx context.Context, start time.Time, user, reason string, info *lockout.FailureInfo, extra ...any) {
	attrs := append([]any{"user", user, "reason", reason}, extra...)
	if info != nil {
		attrs = append(attrs, "lockout", *info)
	}
	s.log.Info("login failed", attrs...)
	defer func() {
		s.srv.metrics.Login(s.spec.Protocol, metrics.ResultFailed, reasonLabel(reason), time.Since(start))
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
