package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/proxy"
)

// drainTimeout is how long sessions may run on after SIGTERM before the
// process exits anyway.
const drainTimeout = 10 * time.Second

// pidFileName, inside state_dir, lets `kanmon reload` find the server.
const pidFileName = "kanmon.pid"

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

// newLogger returns the process logger at the config's level.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// serve runs the proxy for the config at path until ctx ends. SIGHUP
// reloads. ready, if not nil, is called once every listener is open.
func serve(ctx context.Context, path string, logOut io.Writer, ready func(*proxy.Server)) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := newLogger(logOut, cfg.LogLevel)
	rt, err := proxy.LoadRuntime(cfg)
	if err != nil {
		return err
	}
	lns, err := proxy.Listen(cfg)
	if err != nil {
		return err
	}
	pidFile := filepath.Join(cfg.StateDir, pidFileName)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	defer os.Remove(pidFile)

	srv := proxy.NewServer(log, rt)
	sessionCtx, cancelSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSessions()
	acceptCtx, stopAccepting := context.WithCancel(sessionCtx)
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
			reload(srv, path, log)
		}
	}
	log.Info("kanmon stopping: no new connections; draining sessions", "timeout", drainTimeout)
	stopAccepting()
	accepting.Wait()
	drained := make(chan struct{})
	go func() { srv.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		log.Warn("drain timeout: closing remaining sessions")
		cancelSessions()
		<-drained
	}
	log.Info("kanmon stopped")
	return runErr
}

// reload re-reads the config and accounts and swaps them in. On any error
// the running configuration stays.
func reload(srv *proxy.Server, path string, log *slog.Logger) {
	cfg, err := config.Load(path)
	if err == nil {
		var rt *proxy.Runtime
		if rt, err = proxy.LoadRuntime(cfg); err == nil {
			old := srv.Runtime().Config
			if !slices.EqualFunc(old.Listeners, cfg.Listeners, sameListener) {
				log.Warn("reload: listener changes take effect only after a restart")
			}
			srv.Swap(rt)
			log.Info("reloaded", "config", cfg.File)
			return
		}
	}
	log.Error("reload failed; the previous configuration stays in force", "err", err)
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
	fmt.Fprintln(stdout, "reload signalled")
	return 0
}

// signalReload validates the files first, so the admin sees any error
// here, then sends SIGHUP to the server named in the pid file.
func signalReload(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if _, err := proxy.LoadRuntime(cfg); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(cfg.StateDir, pidFileName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no running server found (no pid file in state_dir)")
		}
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("pid file holds %q", strings.TrimSpace(string(data)))
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return nil
}
