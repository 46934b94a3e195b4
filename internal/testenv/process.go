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

// StartTimeout bounds how long Runner.Launch waits for a server to be ready.
const StartTimeout = 10 * time.Second

// Process is one run of a server, started by Runner.Launch in a process
// group of its own.
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

// Process returns the process of the latest Launch, nil before the first
// one and after one that failed.
func (r *Runner) Process() *Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

// Launch runs a server and waits until it is ready. It empties logs, then
// runs argv (the binary, then its arguments) in logs.Dir with its stdout and
// stderr appended to logs.Output, in a process group of its own, so that
// Kill and Stop reach every process it forks; on Linux the kernel sends it
// deathSig if the test binary dies without cleaning up. It calls ready every
// 20 ms until it returns nil, for up to StartTimeout. When the server exits
// first or does not get ready, Launch kills it and returns the error
// (ErrAddrInUse when logs say a port was taken).
//
// A goroutine waits for the server. When waiting is not nil, that goroutine
// calls waiting(wait) rather than wait(): a package whose tests tell goleak
// to ignore the goroutine by a function's name passes a function literal
// that calls wait, so that the goroutine runs that literal
// (redisstate's tests ignore "internal/redistest.(*Server).launch.func1").
func (r *Runner) Launch(argv []string, logs Logs, deathSig syscall.Signal, ready func() error, waiting func(wait func())) error {
	p, err := launch(argv, logs, deathSig, ready, waiting)
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return err
}

// launch is Runner.Launch, which keeps what it returns.
func launch(argv []string, logs Logs, deathSig syscall.Signal, ready func() error, waiting func(wait func())) (*Process, error) {
	if err := logs.reset(); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(logs.Dir, logs.Output), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = logs.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr(deathSig)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{name: filepath.Base(cmd.Path), cmd: cmd, exited: make(chan struct{})}
	wait := func() {
		p.err = cmd.Wait()
		close(p.exited)
	}
	if waiting == nil {
		go wait()
	} else {
		go waiting(wait)
	}
	if err := p.waitReady(StartTimeout, 20*time.Millisecond, ready); err != nil {
		p.Kill()
		return nil, markAddrInUse(err, logs.String())
	}
	return p, nil
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
