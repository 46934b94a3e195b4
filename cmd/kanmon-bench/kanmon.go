package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// kanmonSetup is the config directory of the kanmon under test.
type kanmonSetup struct {
	bin        string
	dir        string
	configPath string
	plainAddr  string // tls = "none" listener
	tlsAddr    string // tls = "implicit" listener
	metrics    string
	clientTLS  *tls.Config
}

// freeAddr returns a free loopback address.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// newKanmonSetup writes kanmon's config, certificate and an empty
// accounts file into dir. The limits meant for one address are raised:
// every load client connects from 127.0.0.1.
func newKanmonSetup(bin, dir, backend string) (*kanmonSetup, error) {
	cert, err := selfsigned.New("localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	if _, _, err := cert.WriteFiles(dir, "cert.pem", "key.pem"); err != nil {
		return nil, err
	}
	k := &kanmonSetup{bin: bin, dir: dir, configPath: filepath.Join(dir, "kanmon.toml")}
	for _, a := range []*string{&k.plainAddr, &k.tlsAddr, &k.metrics} {
		if *a, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	k.clientTLS = &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1"}
	cfg := fmt.Sprintf(`# kanmon-bench: every load client connects from 127.0.0.1, so the
# per-address limits are raised; everything else is the default.
state_dir = "state"
accounts  = "accounts.toml"
trusted_networks = ["127.0.0.1/32"]
require_2fa_outside = true
max_connections = 30000
max_preauth_per_ip = 30000
max_sessions_per_user_ip = 30000
drain_timeout = "1s"
metrics_address = %q

[tls]
cert = "cert.pem"
key  = "key.pem"

[[listener]]
protocol = "imap"
address  = %q
tls      = "implicit"

[[listener]]
protocol = "imap"
address  = %q
tls      = "none"

[backend.imap]
address = %q
tls = "none"
master_user = %q
master_password = %q
`, k.metrics, k.tlsAddr, k.plainAddr, backend, masterUser, masterPassword)
	if err := os.WriteFile(k.configPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *kanmonSetup) store() *auth.Store {
	return auth.OpenStore(filepath.Join(k.dir, "accounts.toml"))
}

// addPasscodes gives every user one passcode per app, in one write of
// the accounts file, and returns them by "user/app".
func (k *kanmonSetup) addPasscodes(users, apps []string) (map[string]string, error) {
	pepper, err := auth.LoadOrCreatePepper(filepath.Join(k.dir, "state"))
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
				code, err := auth.GeneratePasscode()
				if err != nil {
					return err
				}
				hash, err := auth.HashPasscode(pepper, code)
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
	logf, err := os.Create(filepath.Join(k.dir, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(k.bin, "serve", "-config", k.configPath)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &kanmonProc{cmd: cmd, log: logf, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for _, addr := range []string{k.plainAddr, k.tlsAddr} {
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
