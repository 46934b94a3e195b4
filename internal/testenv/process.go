//go:build unix

package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// StartTimeout bounds how long Runner.Launch waits for a server to be
// ready, and Runner.Start unless Launch.Timeout says otherwise.
const StartTimeout = 10 * time.Second

// Process is one run of a server, started by Runner.Start (or Launch) in a
// process group of its own.
type Process struct {
	name   string // the binary's file name, for messages
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returned
	err    error         // cmd.Wait's result, valid after exited
}

// Runner launches a server, again after Kill (a restart) or after a port
// was taken (RetryBind), and keeps the latest Process. The zero Runner has
// none yet. It is safe for concurrent use.
type Runner struct {
	mu   sync.Mutex
	proc *Process
}

// Process returns the process of the latest Start (or Launch), nil before
// the first one and after one that failed.
func (r *Runner) Process() *Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

// Launch runs a server and waits until it is ready: Start with a Launch of
// exec.Command(argv[0], argv[1:]...) and the other arguments.
func (r *Runner) Launch(argv []string, logs Logs, deathSig syscall.Signal, ready func() error, waiting func(wait func())) error {
	return r.Start(Launch{Cmd: exec.Command(argv[0], argv[1:]...), Logs: logs, DeathSig: deathSig, Ready: ready, Waiting: waiting})
}

// Launch is one start of a server by Runner.Start.
type Launch struct {
	// Cmd is the server's command: the binary and its arguments, and
	// what else the caller sets, such as Env or, in SysProcAttr, a
	// Credential to run it as another user. Start sets Dir, Stdout and
	// Stderr, and the process group and parent-death signal (GroupAttr).
	Cmd *exec.Cmd
	// Logs are the server's files; it runs in Logs.Dir.
	Logs Logs
	// DeathSig is the signal that the kernel sends the server on Linux if
	// the test binary dies without cleaning up.
	DeathSig syscall.Signal
	// Ready returns nil once the server is ready.
	Ready func() error
	// Timeout bounds how long Start waits for Ready. Default:
	// StartTimeout.
	Timeout time.Duration
	// Waiting, when not nil, is what the goroutine that waits for the
	// server runs (see Runner.Start).
	Waiting func(wait func())
}

// Start runs a server and waits until it is ready. It empties l.Logs
// (unless Keep), then starts l.Cmd in l.Logs.Dir with its stdout and stderr
// appended to l.Logs.Output, in a process group of its own, so that Kill
// and Stop reach every process it forks; on Linux the kernel sends it
// l.DeathSig if the test binary dies without cleaning up. It calls l.Ready
// every 20 ms until it returns nil, for up to l.Timeout. When the server
// exits first or does not get ready, Start kills it and returns the error
// (ErrAddrInUse when this run's logs say a port was taken).
//
// A goroutine waits for the server. When l.Waiting is not nil, that
// goroutine calls Waiting(wait) rather than wait(): a package whose tests
// tell goleak to ignore the goroutine by a function's name passes a
// function literal that calls wait, so that the goroutine runs that literal
// (redisstate's tests ignore "internal/redistest.(*Server).launch.func1").
func (r *Runner) Start(l Launch) error {
	p, err := start(l)
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return err
}

// start is Runner.Start, which keeps what it returns.
func start(l Launch) (*Process, error) {
	logs := l.Logs
	if err := logs.reset(); err != nil {
		return nil, err
	}
	offsets := logs.sizes()
	out, err := os.OpenFile(filepath.Join(logs.Dir, logs.Output), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := l.Cmd
	cmd.Dir = logs.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	GroupAttr(cmd, l.DeathSig)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{name: filepath.Base(cmd.Path), cmd: cmd, exited: make(chan struct{})}
	wait := func() {
		p.err = cmd.Wait()
		close(p.exited)
	}
	if l.Waiting == nil {
		go wait()
	} else {
		go l.Waiting(wait)
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = StartTimeout
	}
	if err := p.waitReady(timeout, 20*time.Millisecond, l.Ready); err != nil {
		p.Kill()
		return nil, markAddrInUse(err, logs.since(offsets))
	}
	return p, nil
}

// GroupAttr puts cmd in a process group of its own and, on Linux, asks the
// kernel to send it deathSig if the test binary dies without cleaning up.
// It keeps what else cmd.SysProcAttr holds, such as a Credential to run as
// another user (Go sets the parent-death signal after changing the
// credentials, which clears it, so the signal still comes). It is for a
// command a package runs itself; Runner.Start calls it.
func GroupAttr(cmd *exec.Cmd, deathSig syscall.Signal) {
	var attr syscall.SysProcAttr
	if cmd.SysProcAttr != nil {
		attr = *cmd.SysProcAttr
	}
	attr.Setpgid = true
	attr.Pgid = 0
	setDeathSig(&attr, deathSig)
	cmd.SysProcAttr = &attr
}

// Running reports whether p is a process that has not exited; false for
// nil, the Process of a Runner that has none.
func (p *Process) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Pid is the process's id, which is also its process group's.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// waitReady calls ready every interval until it returns nil. It fails when
// the process exits first, or with ready's last error after timeout.
func (p *Process) waitReady(timeout, interval time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it was ready: %v", p.name, p.err)
		default:
		}
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// Kill sends SIGKILL to the process group and waits until the process has
// exited and no live process of the group is left (killStragglers).
func (p *Process) Kill() {
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.exited
	p.killStragglers()
}

// Stop sends SIGTERM to the process group; if the process has not exited
// within grace, it kills the group as Kill does. The process normally takes
// its children with it, but Stop, too, returns only when no live process of
// the group is left (killStragglers).
func (p *Process) Stop(grace time.Duration) {
	syscall.Kill(-p.Pid(), syscall.SIGTERM)
	select {
	case <-p.exited:
		p.killStragglers()
	case <-time.After(grace):
		p.Kill()
	}
}

// killStragglers sends SIGKILL to the process group, for up to 5 s, until
// no live process of it is left (GroupAlive): a child may outlive the
// process a moment.
func (p *Process) killStragglers() {
	pgid := p.Pid()
	deadline := time.Now().Add(5 * time.Second)
	for GroupAlive(pgid) && time.Now().Before(deadline) {
		syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}
