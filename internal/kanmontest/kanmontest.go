// Package kanmontest configures and runs kanmon for tests. WriteFiles (or
// NewFiles, for tools) renders a private config, accounts and certificate
// into a dir from Options, with 2FA accounts and passcodes, on free
// loopback ports; the tests that run `kanmon serve` use that directory.
// Start uses the same files to serve in-process in front of a backend the
// test provides (memimap for fast tests, a real Dovecot for the
// end-to-end ones).
package kanmontest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy"
)

// Kanmon is a running in-process kanmon.
type Kanmon struct {
	// Files is the config directory, its listener addresses and the
	// passcodes made at start.
	*Files
	// Guard is the lockout guard, nil with Options.NoLockout.
	Guard *lockout.Guard
	// LastUse records the passcodes' last use (state/lastuse.db).
	LastUse *auth.LastUseStore
	// Server is the running server.
	Server *proxy.Server
	// Metrics are the server's metrics; serve them with
	// httptest.NewServer(k.Metrics.Handler()).
	Metrics *metrics.Metrics

	logs          *syncbuf.Buffer
	stopOnce      sync.Once
	stop          func()
	stopAccepting func()
}

// Start starts kanmon and stops it at test cleanup.
func Start(t testing.TB, opts Options) *Kanmon {
	t.Helper()
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	k := &Kanmon{Files: WriteFiles(t, opts), logs: &syncbuf.Buffer{}}
	// Ports are reserved, released, then bound by proxy.Listen; another
	// socket on the machine (a client's ephemeral port, say) can take one
	// in between, so a bind that finds its port taken starts over on new
	// ones.
	var cfg *config.Config
	var lns []net.Listener
	for attempt := 1; ; attempt++ {
		var err error
		if cfg, err = config.Load(k.ConfigPath); err != nil {
			t.Fatal(err)
		}
		if lns, err = proxy.Listen(cfg); err == nil {
			break
		}
		if attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
		if err := k.writeConfig(); err != nil {
			t.Fatal(err)
		}
	}
	rt, err := proxy.LoadGeneration(cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(k.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if !opts.NoLockout {
		if k.Guard, err = proxy.OpenLockout(rt); err != nil {
			t.Fatal(err)
		}
	}
	if k.LastUse, err = auth.OpenLastUse(filepath.Join(cfg.StateDir, auth.LastUseDBName), 0); err != nil {
		t.Fatal(err)
	}
	k.Metrics = metrics.New()
	if k.Guard != nil {
		k.Metrics.WatchLockouts(k.Guard.LockCounts)
	}
	k.Server = proxy.NewServer(log, rt, proxy.ServerOptions{Lockout: k.Guard, LastUse: k.LastUse, Metrics: k.Metrics})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func(ln net.Listener, spec config.Listener) {
			defer wg.Done()
			_ = k.Server.Serve(ctx, ln, spec)
		}(ln, cfg.Listeners[i])
	}
	k.stopAccepting = func() {
		cancel()
		wg.Wait()
	}
	k.stop = func() {
		k.stopAccepting()
		k.Server.CloseSessions()
		k.Server.Wait()
		if k.Guard != nil {
			_ = k.Guard.Close()
		}
		_ = k.LastUse.Close()
	}
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			t.Logf("kanmon log:\n%s", k.Logs())
		}
	})
	return k
}

// Stop shuts kanmon down as SIGTERM does after its drain timeout: it
// closes every session and returns once the listeners and all sessions
// have ended. Cleanup calls it too; calling it twice is fine.
func (k *Kanmon) Stop() { k.stopOnce.Do(k.stop) }

// StopAccepting begins a shutdown as SIGTERM does: it returns once the
// listeners are closed. The sessions that had not logged in are told so
// and closed; the logged-in ones go on (the drain) until Stop, or
// Server.CloseSessions, ends them.
func (k *Kanmon) StopAccepting() { k.stopAccepting() }

// Reload re-reads the config and accounts and swaps them in, as SIGHUP
// does: the sessions whose credential no longer stands are closed (see
// proxy.Server.Swap). It returns how many.
func (k *Kanmon) Reload(t testing.TB) int {
	t.Helper()
	cfg, err := config.Load(k.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := proxy.LoadGeneration(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k.Server.Swap(rt)
}

// Logs returns everything kanmon logged so far.
func (k *Kanmon) Logs() string { return k.logs.String() }
