package main

import (
	"context"
	"crypto/tls"
	"log/slog"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/portal"
	"github.com/kanmon-mail/kanmon/proxy"
	"github.com/kanmon-mail/kanmon/proxy/backend"
	"github.com/kanmon-mail/kanmon/redisstate"
)

// startPortal starts the self-service portal when cfg has [portal] (nil,
// nil when it has not). It shares the mail proxy's lockout guard, last-use
// store and runtime (read anew on every request, since a reload swaps
// it), and runs reload, an in-process reload of the accounts file
// (reloadAccounts), after each change it writes. It serves the [tls] certificate in force,
// so a reload that renews the certificate renews it here too.
//
// rs is the [redis] client, nil without [redis]. With it, the portal's
// sessions and its TOTP replay guard are kept in Redis, shared by every
// node behind the load balancer (sealed: Redis holds no session token
// and no secret of a session); while Redis does not answer, sign-ins
// and signed-in pages get the "unavailable" page. Without it they are
// kept in this process's memory.
func startPortal(cfg *config.Config, srv *proxy.Server, guard lockout.Enforcer, reload func() error, rs *redisstate.Client, accounts *auth.Store, log *slog.Logger) (*portal.HTTPServer, error) {
	p := cfg.Portal
	if p == nil {
		return nil, nil
	}
	var sessions portal.SharedSessions
	var replay otp.Replay
	if rs != nil {
		sessions, replay = rs.PortalSessions(), rs.TOTPReplay()
	}
	h, err := portal.New(portal.Options{
		Log: log,
		Generation: func() portal.Generation {
			g := srv.Generation()
			return portal.Generation{Config: g.Config, Policy: g.Policy}
		},
		Guard: guard,
		CheckPassword: func(ctx context.Context, user, password string, client backend.ClientInfo) error {
			return srv.Generation().CheckPassword(ctx, user, password, client)
		},
		LastUse:     srv.LastUse,
		RecordUse:   srv.RecordUse,
		Clients:     srv.Clients(),
		Reload:      reload,
		Certificate: func() *tls.Certificate { return srv.Generation().Certificate() },
		Issuer:      p.Issuer,
		MailHost:    p.MailHost,
		SessionIdle: p.SessionIdle.Duration,
		SessionMax:  p.SessionMax.Duration,
		Sessions:    sessions,
		Replay:      replay,
		Accounts:    accounts,
	})
	if err != nil {
		return nil, err
	}
	hs, err := portal.Listen(p.Address, h, func() *tls.Certificate { return srv.Generation().Certificate() }, log)
	if err != nil {
		return nil, err
	}
	log.Info("portal started", "address", hs.Addr().String())
	return hs, nil
}
