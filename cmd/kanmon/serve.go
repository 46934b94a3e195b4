package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/kanmon-mail/kanmon/admin"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy"
	"github.com/kanmon-mail/kanmon/redisstate"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config `FILE` (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: kanmon serve -config FILE")
		return 2
	}
	if err := serve(ctx, *cfgPath, stderr, nil); err != nil {
		fmt.Fprintln(stderr, "kanmon:", err)
		return 1
	}
	return 0
}

// newLogger returns the process logger at the config's level, in its
// format (config.LogFormatText or config.LogFormatJSON).
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	if format == config.LogFormatJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the proxy for the config at path until ctx ends. SIGHUP
// reloads. ready, if not nil, is called once every listener is open.
func serve(ctx context.Context, path string, logOut io.Writer, ready func(*proxy.Server)) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := newLogger(logOut, cfg.LogLevel, cfg.LogFormat)
	// With accounts in PostgreSQL, the node serves logins from a snapshot
	// that the watcher below keeps current (accountsdb).
	accts, accountsGen, err := openAccountsSource(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer accts.close()
	rt, err := accts.generation(cfg)
	if err != nil {
		return err
	}
	local, err := proxy.OpenLockout(rt)
	if err != nil {
		return err
	}
	defer local.Close()
	// With [redis], the lockout is shared by every node, this node's
	// Guard kept alongside for an outage (redisstate.Lockout).
	var guard lockout.Enforcer = local
	var shared *redisstate.Client
	var heartbeat *redisstate.Heartbeat
	if cfg.Redis != nil {
		redisstate.RouteClientLogs(log)
		if shared, err = redisstate.Open(cfg.Redis, log); err != nil {
			return err
		}
		defer shared.Close()
		if w := shared.EvictionWarning(ctx); w != "" {
			log.Warn(w)
		}
		heartbeat = redisstate.NewHeartbeat(shared, redisstate.HeartbeatOptions{}, log)
		defer heartbeat.Close()
		sharedGuard := redisstate.NewLockout(shared, local, cfg.Redis.OnFailure, heartbeat.NodesAlive, log)
		defer sharedGuard.Close()
		guard = sharedGuard
	}
	// With [redis], passcode last use and the password-using clients
	// are shared in Redis; else bbolt.
	var lastUse auth.LastUseKeeper
	var clients auth.ClientKeeper
	if shared != nil {
		redisLastUse := redisstate.NewLastUse(shared, log)
		defer func() {
			if err := redisLastUse.Close(); err != nil {
				log.Error("closing the shared last use", "err", err)
			}
		}()
		lastUse = redisLastUse
		redisClients := redisstate.NewClients(shared, log)
		defer func() {
			if err := redisClients.Close(); err != nil {
				log.Error("closing the shared password-client records", "err", err)
			}
		}()
		clients = redisClients
	} else {
		boltLastUse, err := auth.OpenLastUse(filepath.Join(cfg.StateDir, auth.LastUseDBName), 0)
		if err != nil {
			return err
		}
		defer func() {
			if err := boltLastUse.Close(); err != nil {
				log.Error("closing the last-use database", "err", err)
			}
		}()
		lastUse = boltLastUse
		clients = boltLastUse.Clients()
	}
	var m *metrics.Metrics
	if cfg.MetricsAddress != "" {
		m = metrics.New()
		m.WatchLockouts(guard.LockCounts)
		if shared != nil {
			m.WatchRedis(shared.Up)
		}
		stopMetrics, err := serveMetrics(cfg.MetricsAddress, m, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	srv := proxy.NewServer(log, rt, proxy.ServerOptions{Lockout: guard, LastUse: lastUse, Clients: clients, Metrics: m})
	// Asked at each scrape: a reload's new certificate shows at the next.
	m.WatchCertificate(func() *tls.Certificate { return srv.Generation().Certificate() })
	if heartbeat != nil {
		heartbeat.Start(func() []admin.Session { return adminSessions(srv.Sessions()) })
	}
	var reloadMu sync.Mutex
	doReload := func() error {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		err := reload(srv, guard, accts, path, log)
		m.Reload(err == nil)
		return err
	}
	// The portal's writes touch only the accounts.
	reloadAccountsOnly := func() error {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		err := reloadAccounts(srv, guard, accts, log)
		m.Reload(err == nil)
		return err
	}
	if accts.db != nil {
		// Every change on any node reaches this node's sessions through
		// the watcher: a revoked passcode's sessions are closed.
		watcher := accts.db.Watch(accts.snapshot(), accountsGen, func(a *auth.Accounts, generation int64) {
			reloadMu.Lock()
			defer reloadMu.Unlock()
			accts.set(a)
			next, err := srv.Generation().WithAccountsFrom(a)
			if err != nil {
				log.Error("the accounts database holds accounts kanmon refuses; the previous snapshot stays in force", "err", err)
				return
			}
			closing := swapGeneration(srv, guard, next)
			log.Info("accounts changed in the database", "generation", generation, "sessions_revoked", closing)
		})
		defer watcher.Close()
		m.WatchAccountsDB(watcher.Up)
	}
	adminSrv, err := admin.Listen(cfg.StateDir, admin.Handlers{
		Reload: doReload,
		LockoutList: func() ([]string, error) {
			var lines []string
			for _, e := range guard.List() {
				lines = append(lines, e.String())
			}
			return lines, nil
		},
		LockoutClear: func(target string) (int, error) {
			n := guard.Clear(target)
			log.Info("lockout cleared by admin", "target", target, "entries", n)
			return n, nil
		},
		Sessions: func() ([]admin.Session, error) {
			if heartbeat != nil {
				return heartbeat.Sessions(context.Background())
			}
			return adminSessions(srv.Sessions()), nil
		},
		LastUse: srv.LastUse,
		Clients: clients,
	})
	if err != nil {
		return err
	}
	defer adminSrv.Close()
	// The self-service portal, when [portal] is set, shares the guard,
	// the last-use store, the runtime and the reload; it stops with the
	// listeners at SIGTERM.
	portalSrv, err := startPortal(cfg, srv, guard, reloadAccountsOnly, shared, accts.store(), log)
	if err != nil {
		return err
	}
	stopPortal := sync.OnceFunc(func() {
		if portalSrv == nil {
			return
		}
		if err := portalSrv.Shutdown(); err != nil {
			log.Warn("portal shutdown", "err", err)
		}
	})
	defer stopPortal()
	// The mail listeners open last: once a client can connect, the
	// admin socket (kanmon sessions, reload) answers too.
	lns, err := proxy.Listen(cfg)
	if err != nil {
		return err
	}
	// Listeners and the sessions that have not logged in end when the
	// loop below says so; logged-in sessions drain (see the end).
	acceptCtx, stopAccepting := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAccepting()
	var accepting sync.WaitGroup
	errs := make(chan error, len(lns))
	for i, ln := range lns {
		accepting.Add(1)
		go func(ln net.Listener, spec config.Listener) {
			defer accepting.Done()
			if err := srv.Serve(acceptCtx, ln, spec); err != nil {
				errs <- err
			}
		}(ln, cfg.Listeners[i])
	}
	if ready != nil {
		ready(srv)
	}
	log.Info("kanmon started", "config", cfg.File, "listeners", len(lns), "pid", os.Getpid())

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errs:
			runErr = err
			break loop
		case <-hup:
			_ = doReload()
		}
	}
	drain := srv.Generation().Config.DrainTimeout.Duration
	log.Info("kanmon stopping: no new connections; closing sessions not logged in; draining the others", "timeout", drain)
	stopAccepting()
	stopPortal()
	accepting.Wait()
	drained := make(chan struct{})
	go func() { srv.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drain):
		n := srv.CloseSessions()
		log.Warn("drain timeout: closing the remaining sessions", "sessions", n)
		<-drained
	}
	log.Info("kanmon stopped")
	return runErr
}

// adminSessions converts the registry's list for the admin socket.
func adminSessions(list []proxy.SessionInfo) []admin.Session {
	out := make([]admin.Session, len(list))
	for i, s := range list {
		out[i] = admin.Session{
			User: s.User, Protocol: s.Protocol, ClientIP: s.ClientIP.String(),
			Method: s.Method, App: s.App, Client: s.Client,
			Since: s.Since, BytesIn: s.BytesIn, BytesOut: s.BytesOut,
		}
	}
	return out
}

// reload re-reads the config and accounts and swaps them in; the swap
// closes the live sessions whose credential no longer stands. On any error
// the running configuration stays, and the error (file:line) is returned
// for `kanmon reload` to print. Accounts whose 2FA state changed lose their
// remembered wrong secrets: the password that was wrong while 2FA was on
// is the right one after `2fa disable`.
func reload(srv *proxy.Server, guard lockout.Enforcer, accts *accountsSource, path string, log *slog.Logger) error {
	cfg, err := config.Load(path)
	if err == nil {
		var rt *proxy.Generation
		if rt, err = accts.generation(cfg); err == nil {
			old := srv.Generation()
			if old.Config.AccountsURL != cfg.AccountsURL {
				log.Warn("reload: a change between an accounts file and a database, or to the database URL, takes effect only after a restart")
			}
			if !slices.EqualFunc(old.Config.Listeners, cfg.Listeners, sameListener) {
				log.Warn("reload: listener changes take effect only after a restart")
			}
			if !samePortal(old.Config.Portal, cfg.Portal) {
				log.Warn("reload: [portal] changes take effect only after a restart")
			}
			if !reflect.DeepEqual(old.Config.Redis, cfg.Redis) {
				log.Warn("reload: [redis] changes take effect only after a restart")
			}
			closing := swapGeneration(srv, guard, rt)
			log.Info("reloaded", "config", cfg.File, "sessions_revoked", closing)
			return nil
		}
	}
	log.Error("reload failed; the previous configuration stays in force", "err", err)
	return err
}

// reloadAccounts is the portal's reload after a change it wrote: the
// accounts file only, under the configuration in force. A config file
// that an admin is halfway through editing does not hold it up.
func reloadAccounts(srv *proxy.Server, guard lockout.Enforcer, accts *accountsSource, log *slog.Logger) error {
	rt, err := accts.withAccounts(srv.Generation())
	if err != nil {
		log.Error("reloading the accounts file failed; the previous accounts stay in force", "err", err)
		return err
	}
	closing := swapGeneration(srv, guard, rt)
	log.Info("reloaded the accounts file", "sessions_revoked", closing)
	return nil
}

// swapGeneration puts rt in force: the lockout forgets the stale secrets of
// accounts whose 2FA changed, and the sessions whose credential no longer
// stands are closed (their number is returned).
func swapGeneration(srv *proxy.Server, guard lockout.Enforcer, rt *proxy.Generation) int {
	for _, user := range srv.Generation().Policy.TwoFAChanges(rt.Policy) {
		guard.ResetAccount(user)
	}
	return srv.Swap(rt)
}

// samePortal reports whether two [portal] tables (nil: none) are equal.
func samePortal(a, b *config.Portal) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func sameListener(a, b config.Listener) bool {
	return a.Protocol == b.Protocol && a.Address == b.Address && a.TLS == b.TLS
}

func runReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config `FILE` (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: kanmon reload -config FILE")
		return 2
	}
	if err := signalReload(*cfgPath); err != nil {
		fmt.Fprintln(stderr, "kanmon reload:", err)
		return 1
	}
	fmt.Fprintln(stdout, "reloaded")
	return 0
}

// signalReload asks the running server, over its admin socket, to reload,
// and returns the server's error (file:line) if the new files are bad. A
// server without the socket (none running) is an error.
func signalReload(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	return admin.NewClient(cfg.StateDir).Reload()
}
