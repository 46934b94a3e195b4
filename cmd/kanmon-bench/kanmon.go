//go:build unix

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// kanmonSetup is the config directory of the kanmon under test: IMAPS
// (tls = "implicit") and IMAPPlain (tls = "none") listeners, and
// MetricsAddr.
type kanmonSetup struct {
	*kanmontest.Files
	bin string
}

// benchLimits raises the limits meant for one address: every load client
// connects from 127.0.0.1. Everything else is the default.
const benchLimits = `max_connections = 30000
max_preauth_per_ip = 30000
max_sessions_per_user_ip = 30000
drain_timeout = "1s"
`

// newKanmonSetup writes kanmon's config and certificate into dir (no
// accounts yet), for kanmon in front of backend as it ships
// (ServerLockout), with benchLimits.
func newKanmonSetup(bin, dir, backend string) (*kanmonSetup, error) {
	f, err := kanmontest.NewFiles(dir, kanmontest.Options{
		IMAPBackend: backend,
		MasterUser:  masterUser, MasterPassword: masterPassword,
		Listeners:      []string{"implicit", "none"},
		MetricsAddress: true,
		Extra:          benchLimits,
		Lockout:        kanmontest.ServerLockout,
	})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, err
	}
	return &kanmonSetup{Files: f, bin: bin}, nil
}

func (k *kanmonSetup) store() *auth.Store {
	return auth.OpenStore(filepath.Join(k.Dir, "accounts.toml"))
}

// addPasscodes gives every user one passcode per app, in one write of
// the accounts file, and returns them by "user/app".
func (k *kanmonSetup) addPasscodes(users, apps []string) (map[string]string, error) {
	pepper, err := auth.LoadOrCreatePepper(filepath.Join(k.Dir, "state"))
	if err != nil {
		return nil, err
	}
	codes := map[string]string{}
	now := time.Now().UTC().Truncate(time.Second)
	err = k.store().Update(func(a *auth.Accounts) error {
		for _, u := range users {
			acct := a.Lookup(u)
			if acct == nil {
				a.Accounts = append(a.Accounts, auth.Account{User: u, Enabled: now})
				acct = &a.Accounts[len(a.Accounts)-1]
			}
			for _, app := range apps {
				code, hash, err := newPasscode(pepper)
				if err != nil {
					return err
				}
				acct.Passcodes = append(acct.Passcodes, auth.AppPasscode{App: app, Created: now, Hash: hash})
				codes[u+"/"+app] = code
			}
		}
		return nil
	})
	return codes, err
}

// newPasscode makes a passcode and its hash under pepper.
func newPasscode(pepper auth.Pepper) (code, hash string, err error) {
	if code, err = auth.GeneratePasscode(); err != nil {
		return "", "", err
	}
	hash, err = auth.HashPasscode(pepper, code)
	return code, hash, err
}

// kanmonProc is a running `kanmon serve`.
type kanmonProc struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func (p *kanmonProc) pid() int { return p.cmd.Process.Pid }

// start runs `kanmon serve -config FILE` in its own process group and
// waits until both listeners accept. Its log and stderr go to logName in
// the config directory;
// extraEnv, such as GODEBUG=gctrace=1, is added to its environment.
func (k *kanmonSetup) start(logName string, extraEnv ...string) (*kanmonProc, error) {
	logf, err := os.Create(filepath.Join(k.Dir, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(k.bin, "serve", "-config", k.ConfigPath)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = serveProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &kanmonProc{cmd: cmd, log: logf, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for _, addr := range []string{k.IMAPPlain, k.IMAPS} {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				return nil, fmt.Errorf("kanmon serve exited; see %s", logf.Name())
			default:
			}
			if time.Now().After(deadline) {
				p.stop()
				return nil, fmt.Errorf("kanmon did not listen on %s within 15s", addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return p, nil
}

// stop sends SIGTERM (drain_timeout is 1 s), then SIGKILL after 10 s.
func (p *kanmonProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.log.Close()
}

// gcTrace returns how many garbage collections kanmon's GODEBUG=gctrace=1
// lines report so far, and the live heap after the last one, in MB (the
// third figure of "gc N @…: …, A->B->C MB, …").
func (p *kanmonProc) gcTrace() (count int, liveMB int) {
	b, err := os.ReadFile(p.log.Name())
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "gc ") {
			continue
		}
		count++
		for _, f := range strings.Split(l, ",") {
			f = strings.TrimSpace(f)
			if strings.HasSuffix(f, " MB") && strings.Count(f, "->") == 2 {
				parts := strings.Split(strings.TrimSuffix(f, " MB"), "->")
				fmt.Sscan(parts[2], &liveMB)
			}
		}
	}
	return count, liveMB
}

// logCount counts the lines of kanmon's log that contain s.
func (p *kanmonProc) logCount(s string) int {
	b, err := os.ReadFile(p.log.Name())
	if err != nil {
		return -1
	}
	return strings.Count(string(b), s)
}
