// Package kanmontest runs a kanmon server in-process for tests: it writes a
// private config, accounts and certificate into a temp dir, adds 2FA
// accounts with passcodes, and serves on free loopback ports in front of a
// backend the test provides (memimap for fast tests, a real Dovecot for the
// end-to-end ones).
package kanmontest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy"
)

// Options describe the kanmon to start.
type Options struct {
	// IMAPBackend is the backend's host:port.
	IMAPBackend string
	// MasterUser and MasterPassword are the backend master credentials.
	MasterUser, MasterPassword string
	// TrustedNetworks defaults to 127.0.0.1/32 when nil; use an empty,
	// non-nil slice for "nothing is trusted".
	TrustedNetworks []string
	// AllowOutside sets require_2fa_outside = false.
	AllowOutside bool
	// Passcodes lists, per 2FA user, the apps to make passcodes for.
	// Users listed with no apps still get 2FA.
	Passcodes map[string][]string
	// Extra is appended to the top level of the config (before tables).
	Extra string
	// BackendTLS is [backend.imap] tls: none (the default), starttls or
	// implicit.
	BackendTLS string
	// BackendExtra is appended inside [backend.imap], e.g.
	// `timeout = "300ms"`.
	BackendExtra string
	// POP3Backend and SubmissionBackend, when set, add that protocol's
	// three listeners and a [backend.X] with the same master credentials.
	POP3Backend, SubmissionBackend string
	// POP3BackendExtra is appended inside [backend.pop3], e.g.
	// `forward_client_ip = "xclient"`.
	POP3BackendExtra string
	// ListenerExtra is appended inside every [[listener]], e.g.
	// "proxy_protocol = true".
	ListenerExtra string
	// Lockout is the body of the [lockout] section. Empty means
	// DefaultLockout: real counters with a 1 ms tarpit, so tests stay fast.
	Lockout string
	// NoLockout runs without the lockout guard.
	NoLockout bool
}

// DefaultLockout is the [lockout] body tests get unless they set their
// own: the real thresholds, but a tarpit too short to slow a test down.
const DefaultLockout = "tarpit = \"1ms\"\ntarpit_max = \"1ms\"\n"

// Kanmon is a running in-process kanmon.
type Kanmon struct {
	// Dir holds the config, accounts, state and certificate.
	Dir string
	// ConfigPath is the config file.
	ConfigPath string
	// IMAPS, IMAPStartTLS and IMAPPlain are the listener addresses
	// (implicit TLS, STARTTLS, and plaintext-for-loopback).
	IMAPS, IMAPStartTLS, IMAPPlain string
	// POP3S, POP3StartTLS and POP3Plain are set when Options.POP3Backend is.
	POP3S, POP3StartTLS, POP3Plain string
	// SubmissionS, SubmissionStartTLS and SubmissionPlain are set when
	// Options.SubmissionBackend is.
	SubmissionS, SubmissionStartTLS, SubmissionPlain string
	// Guard is the lockout guard, nil with Options.NoLockout.
	Guard *lockout.Guard
	// LastUse records the passcodes' last use (state/lastuse.db).
	LastUse *auth.LastUseStore
	// Server is the running server.
	Server *proxy.Server
	// Metrics are the server's metrics; serve them with
	// httptest.NewServer(k.Metrics.Handler()).
	Metrics *metrics.Metrics
	// ClientTLS trusts kanmon's certificate.
	ClientTLS *tls.Config

	passcodes     map[string]string
	logs          *syncbuf.Buffer
	stopOnce      sync.Once
	stop          func()
	stopAccepting func()
}

// Start starts kanmon and stops it at test cleanup.
func Start(t testing.TB, opts Options) *Kanmon {
	t.Helper()
	dir := t.TempDir()
	cert, err := selfsigned.New("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cert.WriteFiles(dir, "cert.pem", "key.pem"); err != nil {
		t.Fatal(err)
	}
	k := &Kanmon{
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "kanmon.toml"),
		ClientTLS:  &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1"},
		passcodes:  map[string]string{},
		logs:       &syncbuf.Buffer{},
	}
	trusted := opts.TrustedNetworks
	if trusted == nil {
		trusted = []string{"127.0.0.1/32"}
	}
	quoted := make([]string, len(trusted))
	for i, n := range trusted {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	lockoutBody := opts.Lockout
	if lockoutBody == "" {
		lockoutBody = DefaultLockout
	}
	// Ports are reserved, released, then bound by proxy.Listen; another
	// socket on the machine (a client's ephemeral port, say) can take one
	// in between, so a bind that finds its port taken starts over.
	var cfg *config.Config
	var lns []net.Listener
	for attempt := 1; ; attempt++ {
		var err error
		cfg, err = func() (*config.Config, error) {
			ports := reservePorts(t)
			var b strings.Builder
			fmt.Fprintf(&b, `state_dir = "state"
		accounts  = "accounts.toml"
		trusted_networks = [%s]
		require_2fa_outside = %t
		log_level = "debug"
		%s
		[tls]
		cert = "cert.pem"
		key  = "key.pem"

		[lockout]
		%s
		`, strings.Join(quoted, ", "), !opts.AllowOutside, opts.Extra, lockoutBody)
			protocols := []struct {
				name, backend, tls, extra string
				implicit, starttls, plain *string
			}{
				{"imap", opts.IMAPBackend, opts.BackendTLS, opts.BackendExtra, &k.IMAPS, &k.IMAPStartTLS, &k.IMAPPlain},
				{"pop3", opts.POP3Backend, "", opts.POP3BackendExtra, &k.POP3S, &k.POP3StartTLS, &k.POP3Plain},
				{"submission", opts.SubmissionBackend, "", "", &k.SubmissionS, &k.SubmissionStartTLS, &k.SubmissionPlain},
			}
			for _, p := range protocols {
				if p.backend == "" {
					continue
				}
				*p.implicit, *p.starttls, *p.plain = ports.next(), ports.next(), ports.next()
				for _, l := range []struct{ addr, mode string }{{*p.implicit, "implicit"}, {*p.starttls, "starttls"}, {*p.plain, "none"}} {
					fmt.Fprintf(&b, "[[listener]]\nprotocol = %q\naddress = %q\ntls = %q\n%s\n\n", p.name, l.addr, l.mode, opts.ListenerExtra)
				}
				backendTLS := p.tls
				if backendTLS == "" {
					backendTLS = "none"
				}
				fmt.Fprintf(&b, "[backend.%s]\naddress = %q\ntls = %q\nmaster_user = %q\nmaster_password = %q\n%s\n\n",
					p.name, p.backend, backendTLS, opts.MasterUser, opts.MasterPassword, p.extra)
			}
			ports.release()
			cfgText := b.String()
			if err := os.WriteFile(k.ConfigPath, []byte(cfgText), 0o600); err != nil {
				t.Fatal(err)
			}
			return config.Load(k.ConfigPath)
		}()
		if err != nil {
			t.Fatal(err)
		}
		lns, err = proxy.Listen(cfg)
		if err == nil {
			break
		}
		if attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	for user, apps := range opts.Passcodes {
		for _, app := range apps {
			k.passcodes[user+"/"+app] = k.AddPasscode(t, user, app)
		}
		if len(apps) == 0 {
			k.EnableTwoFA(t, user)
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

// Passcode returns the passcode made for user's app at start.
func (k *Kanmon) Passcode(user, app string) string {
	return k.passcodes[user+"/"+app]
}

// EnableTwoFA turns 2FA on for user in the accounts file (as the CLI
// does). Call Reload to make the server see it.
func (k *Kanmon) EnableTwoFA(t testing.TB, user string) {
	t.Helper()
	store := auth.OpenStore(filepath.Join(k.Dir, "accounts.toml"))
	if _, err := auth.EnableTwoFA(store, user); err != nil {
		t.Fatal(err)
	}
}

// AddPasscode adds a passcode for user's app (turning 2FA on) and returns
// it. Call Reload to make a running server see it.
func (k *Kanmon) AddPasscode(t testing.TB, user, app string) string {
	t.Helper()
	k.EnableTwoFA(t, user)
	pc, err := auth.AddPasscode(auth.OpenStore(filepath.Join(k.Dir, "accounts.toml")), filepath.Join(k.Dir, "state"), user, app)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// AddScopedPasscode adds a passcode for user's app valid only on protocols
// (turning 2FA on) and returns it. Call Reload to make a running server
// see it.
func (k *Kanmon) AddScopedPasscode(t testing.TB, user, app string, protocols ...string) string {
	t.Helper()
	k.EnableTwoFA(t, user)
	pc, err := auth.AddScopedPasscode(k.store(), filepath.Join(k.Dir, "state"), user, app, protocols)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// RevokePasscode deletes user's passcode for app, as `kanmon passcode
// revoke` does. Call Reload to make the server see it.
func (k *Kanmon) RevokePasscode(t testing.TB, user, app string) {
	t.Helper()
	if _, _, err := auth.RevokePasscode(k.store(), user, app); err != nil {
		t.Fatal(err)
	}
}

// DisableTwoFA is the admin reset `kanmon 2fa disable`: 2FA off, all of
// user's passcodes gone. Call Reload to make the server see it.
func (k *Kanmon) DisableTwoFA(t testing.TB, user string) {
	t.Helper()
	if _, _, err := auth.DisableTwoFA(k.store(), user); err != nil {
		t.Fatal(err)
	}
}

func (k *Kanmon) store() *auth.Store { return auth.OpenStore(filepath.Join(k.Dir, "accounts.toml")) }

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

// portReservation hands out distinct free loopback ports: each stays bound
// until release, so the kernel cannot hand the same one out twice.
type portReservation struct {
	t   testing.TB
	lns []net.Listener
}

func reservePorts(t testing.TB) *portReservation { return &portReservation{t: t} }

func (r *portReservation) next() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	r.lns = append(r.lns, ln)
	return ln.Addr().String()
}

func (r *portReservation) release() {
	for _, ln := range r.lns {
		ln.Close()
	}
}
