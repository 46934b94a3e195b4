package e2e

// The real binary: `kanmon serve` as a subprocess on a config directory
// that kanmontest writes, and the admin CLI run on the same config.

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
)

// buildKanmon builds the kanmon binary into a temp dir.
func buildKanmon(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kanmon")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/kanmon")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// mustRun runs the kanmon CLI and returns its stdout; a non-zero exit fails.
func mustRun(t testing.TB, bin string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("kanmon %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// groupedPasscodeLineRE is the line on which `kanmon passcode add` prints
// the new passcode, grouped in fours.
var groupedPasscodeLineRE = regexp.MustCompile(`(?m)^\s+([A-Z]{4} [A-Z]{4} [A-Z]{4} [A-Z]{4})$`)

// cliAddPasscode runs `kanmon passcode add args...` and returns the
// passcode it printed grouped, without the spaces.
func cliAddPasscode(t testing.TB, bin string, args ...string) string {
	t.Helper()
	out := mustRun(t, bin, append([]string{"passcode", "add"}, args...)...)
	m := groupedPasscodeLineRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("passcode add printed no grouped passcode:\n%s", out)
	}
	return strings.ReplaceAll(m[1], " ", "")
}

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serveFiles writes a config directory for `kanmon serve` in front of
// dc's IMAP: opts with the master credentials, and one implicit-TLS
// listener unless opts names others.
func serveFiles(t testing.TB, dc *dovecottest.Server, opts kanmontest.Options) *kanmontest.Files {
	t.Helper()
	opts.IMAPBackend = dc.IMAPAddr
	opts.MasterUser, opts.MasterPassword = masterUser, masterPassword
	if opts.Listeners == nil {
		opts.Listeners = []string{"implicit"}
	}
	return kanmontest.WriteFiles(t, opts)
}

// serveProcess is a running `kanmon serve`.
type serveProcess struct {
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit, once done is closed
}

// startServe runs `kanmon serve -config cfg` and waits until it accepts
// connections at addr. The process is killed at cleanup, and its log
// shown if the test failed.
func startServe(t testing.TB, bin, cfg, addr string) *serveProcess {
	t.Helper()
	p := &serveProcess{cmd: exec.Command(bin, "serve", "-config", cfg), log: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("kanmon serve (pid %d) log:\n%s", p.cmd.Process.Pid, p.log.String())
		}
	})
	waitFor(t, 10*time.Second, "kanmon serve to listen", func() bool {
		select {
		case <-p.done:
			t.Fatalf("kanmon serve exited:\n%s", p.log.String())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// signal sends sig to the process.
func (p *serveProcess) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// exited waits up to timeout for the process to exit, and fails unless it
// exits 0.
func (p *serveProcess) exited(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("kanmon serve exited: %v", p.err)
		}
	case <-time.After(timeout):
		t.Fatalf("kanmon serve did not exit within %v", timeout)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *serveProcess) stop(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	p.exited(t, 20*time.Second)
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (p *serveProcess) kill9(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("kanmon serve survived SIGKILL")
	}
}
