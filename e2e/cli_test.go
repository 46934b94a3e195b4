package e2e

import (
	"bytes"
	"context"
	"fmt"
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
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// Story 1, as an admin does it: write the DESIGN.md-style config, run
// `kanmon 2fa enable` and `kanmon passcode add` (which prints the passcode
// once, grouped), start `kanmon serve`, log in with curl; then revoke,
// `kanmon reload`, and the passcode fails; SIGTERM exits 0.
func TestE2EAdminCLIStory(t *testing.T) {
	dc := dovecottest.Start(t, dovecottest.Options{
		Users:      []dovecottest.User{{Name: "alice", Password: alicePassword}},
		MasterUser: masterUser, MasterPassword: masterPassword,
	})
	dc.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "cli story", "served by kanmon serve 55e1"))
	bin := buildKanmon(t)
	dir := t.TempDir()
	cert, err := selfsigned.New("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cert.WriteFiles(dir, "cert.pem", "key.pem"); err != nil {
		t.Fatal(err)
	}
	imaps, imap := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "kanmon.toml")
	writeFile(t, cfg, fmt.Sprintf(`state_dir = "state"                   # bbolt database lives here
accounts  = "accounts.toml"           # 2FA accounts and passcode hashes; reloaded on SIGHUP
trusted_networks = ["127.0.0.1/32"]
require_2fa_outside = true

[tls]
cert = "cert.pem"
key  = "key.pem"

[[listener]]
protocol = "imap"                     # imap | pop3 | submission
address  = %q
tls      = "implicit"                 # implicit | starttls | none

[[listener]]
protocol = "imap"
address  = %q
tls      = "starttls"

[backend.imap]                        # also [backend.pop3], [backend.submission]
address = %q
tls = "none"                          # none | starttls | implicit
master_user = %q
master_password_file = "master.pw"
`, imaps, imap, dc.IMAPAddr, masterUser))
	writeFile(t, filepath.Join(dir, "master.pw"), masterPassword+"\n")

	mustRun(t, bin, "check", "-config", cfg)
	mustRun(t, bin, "2fa", "enable", "-config", cfg, "alice")
	out := mustRun(t, bin, "passcode", "add", "-config", cfg, "alice", "Thunderbird")
	grouped := regexp.MustCompile(`(?m)^\s+([A-Z]{4} [A-Z]{4} [A-Z]{4} [A-Z]{4})$`).FindStringSubmatch(out)
	if grouped == nil {
		t.Fatalf("passcode add printed no grouped passcode:\n%s", out)
	}
	passcode := grouped[1]
	cybozuOut := mustRun(t, bin, "passcode", "add", "-config", cfg, "alice", "Cybozu")
	cybozu := regexp.MustCompile(`(?m)^\s+([A-Z]{4} [A-Z]{4} [A-Z]{4} [A-Z]{4})$`).FindStringSubmatch(cybozuOut)[1]
	if list := mustRun(t, bin, "passcode", "list", "-config", cfg); strings.Contains(list, strings.ReplaceAll(passcode, " ", "")) || !strings.Contains(list, "Thunderbird") {
		t.Fatalf("passcode list shows the secret or misses the app:\n%s", list)
	}

	var serveLog bytes.Buffer
	serve := exec.Command(bin, "serve", "-config", cfg)
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve.Wait() }()
	t.Cleanup(func() {
		_ = serve.Process.Kill()
		if t.Failed() {
			t.Logf("kanmon serve log:\n%s", serveLog.String())
		}
	})
	waitFor(t, 10*time.Second, "kanmon serve to listen", func() bool {
		c, err := net.Dial("tcp", imaps)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	curlArgs := func(secret string) []string {
		return []string{"--silent", "--show-error", "--max-time", "20", "--cacert", filepath.Join(dir, "cert.pem"),
			"--user", "alice:" + secret, "imaps://" + imaps + "/INBOX;UID=1"}
	}
	curl := requireCurl(t)
	if out, err := exec.Command(curl, curlArgs(passcode)...).CombinedOutput(); err != nil || !strings.Contains(string(out), "served by kanmon serve 55e1") {
		t.Fatalf("curl with the new passcode: %v\n%s", err, out)
	}
	if err := exec.Command(curl, curlArgs(alicePassword)...).Run(); err == nil {
		t.Fatal("curl with alice's account password succeeded")
	}

	mustRun(t, bin, "passcode", "revoke", "-config", cfg, "alice", "Thunderbird")
	mustRun(t, bin, "reload", "-config", cfg)
	waitFor(t, 10*time.Second, "the revoked passcode to stop working", func() bool {
		return exec.Command(curl, curlArgs(passcode)...).Run() != nil
	})

	// A broken config on reload: kanmon reload prints file:line and exits
	// 1, and the running configuration keeps serving.
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, string(good)+"bogus_key = 1\n")
	bad := exec.Command(bin, "reload", "-config", cfg)
	badOut, err := bad.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !regexp.MustCompile(`kanmon\.toml:\d+: .*bogus_key`).Match(badOut) {
		t.Fatalf("kanmon reload of a broken config: %v\n%s", err, badOut)
	}
	if out, err := exec.Command(curl, curlArgs(cybozu)...).CombinedOutput(); err != nil || !strings.Contains(string(out), "served by kanmon serve 55e1") {
		t.Fatalf("after a failed reload the old configuration should still serve: %v\n%s", err, out)
	}
	writeFile(t, cfg, string(good))

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kanmon serve after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("kanmon serve did not exit after SIGTERM")
	}
	if !strings.Contains(serveLog.String(), "reloaded") {
		t.Errorf("serve log shows no reload:\n%s", serveLog.String())
	}
}

// buildKanmon builds the kanmon binary into a temp dir.
func buildKanmon(t *testing.T) string {
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
func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("kanmon %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a free loopback host:port.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
