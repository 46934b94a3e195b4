package e2e

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Story 1, as an admin does it: a config like DESIGN.md's (IMAP over
// implicit TLS and STARTTLS, the master password in a file), `kanmon 2fa
// enable` and `kanmon passcode add` (which prints the passcode once,
// grouped), start `kanmon serve`, log in with curl; then revoke, `kanmon
// reload`, and the passcode fails; SIGTERM exits 0.
func TestE2EAdminCLIStory(t *testing.T) {
	dc := startDovecot(t, dovecottest.Options{}, "alice")
	dc.Deliver(t, "alice", message("bob@example.edu", "alice@example.edu", "cli story", "served by kanmon serve 55e1"))
	bin := buildKanmon(t)
	f := serveFiles(t, dc, kanmontest.Options{
		Listeners:          []string{"implicit", "starttls"},
		MasterPasswordFile: "master.pw",
	})
	cfg := f.ConfigPath

	mustRun(t, bin, "check", "-config", cfg)
	mustRun(t, bin, "2fa", "enable", "-config", cfg, "alice")
	passcode := auth.FormatPasscode(cliAddPasscode(t, bin, "-config", cfg, "alice", "Thunderbird"))
	cybozu := auth.FormatPasscode(cliAddPasscode(t, bin, "-config", cfg, "alice", "Cybozu"))
	if list := mustRun(t, bin, "passcode", "list", "-config", cfg); strings.Contains(list, strings.ReplaceAll(passcode, " ", "")) || !strings.Contains(list, "Thunderbird") {
		t.Fatalf("passcode list shows the secret or misses the app:\n%s", list)
	}

	p := startServe(t, bin, cfg, f.IMAPS)
	curl := func(secret string) curlResult {
		return runCurl(t, f.CertFile, "--user", "alice:"+secret, "imaps://"+f.IMAPS+"/INBOX;UID=1")
	}
	if res := curl(passcode); res.exitCode != 0 || !strings.Contains(res.stdout, "served by kanmon serve 55e1") {
		t.Fatalf("curl with the new passcode: exit %d\n%s%s", res.exitCode, res.stdout, res.stderr)
	}
	if res := curl(alicePassword); res.exitCode == 0 {
		t.Fatal("curl with alice's account password succeeded")
	}

	mustRun(t, bin, "passcode", "revoke", "-config", cfg, "alice", "Thunderbird")
	mustRun(t, bin, "reload", "-config", cfg)
	waitFor(t, 10*time.Second, "the revoked passcode to stop working", func() bool {
		return curl(passcode).exitCode != 0
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
	if res := curl(cybozu); res.exitCode != 0 || !strings.Contains(res.stdout, "served by kanmon serve 55e1") {
		t.Fatalf("after a failed reload the old configuration should still serve: exit %d\n%s%s", res.exitCode, res.stdout, res.stderr)
	}
	writeFile(t, cfg, string(good))

	p.signal(t, syscall.SIGTERM)
	p.exited(t, 15*time.Second)
	if !strings.Contains(p.log.String(), "reloaded") {
		t.Errorf("serve log shows no reload:\n%s", p.log.String())
	}
}
