package main

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/kanmon-mail/kanmon/auth"
)

// designConfigFile is the example config of DESIGN.md, verbatim; config's
// TestExampleFileIsVerbatim keeps it so.
const designConfigFile = "../../testdata/kanmon.example.toml"

// designConfigText returns the example config of DESIGN.md.
func designConfigText(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(designConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// accountsTestDir writes the design config into a temp dir and returns the
// dir and the config path.
func accountsTestDir(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	cfg = filepath.Join(dir, "kanmon.toml")
	if err := os.WriteFile(cfg, []byte(designConfigText(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// cliRun runs the CLI in-process and returns exit code, stdout and stderr.
func cliRun(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// cliMust runs the CLI and fails the test unless it exits with want.
func cliMust(t *testing.T, want int, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := cliRun(args...)
	if code != want {
		t.Fatalf("kanmon %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out, errOut
}

var passcodeLineRE = regexp.MustCompile(`(?m)^    ([A-Z]{4} [A-Z]{4} [A-Z]{4} [A-Z]{4})$`)

// decideFromFiles builds a Policy from the files as the server would and decides.
func decideFromFiles(t *testing.T, dir, user, secret, ip string) auth.Decision {
	t.Helper()
	accts, err := auth.LoadAccounts(filepath.Join(dir, "accounts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	pepper, err := auth.LoadOrCreatePepper(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	p := auth.NewPolicy(accts, pepper, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, true)
	return p.Decide(auth.Attempt{User: user, Secret: secret, ClientIP: netip.MustParseAddr(ip), Protocol: "imap"})
}

func TestCLIPasscodeLifecycle(t *testing.T) {
	dir, cfg := accountsTestDir(t)

	out, _ := cliMust(t, 0, "check", "-config", cfg)
	if out != "ok: 2 listeners, 0 2FA accounts, 0 passcodes\n" {
		t.Errorf("check: %q", out)
	}
	_, errOut := cliMust(t, 1, "passcode", "add", "-config", cfg, "alice", "Thunderbird")
	if !strings.Contains(errOut, "alice does not have 2FA on; run kanmon 2fa enable first") {
		t.Errorf("add without 2FA: %q", errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Errorf("a refused add created the state dir")
	}

	out, _ = cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	if !strings.Contains(out, "2FA is now on for alice") {
		t.Errorf("enable: %q", out)
	}
	out, _ = cliMust(t, 0, "2fa", "enable", "-config", cfg, "ALICE")
	if !strings.Contains(out, "already on") {
		t.Errorf("second enable: %q", out)
	}
	if d := decideFromFiles(t, dir, "alice", "alice-password", "127.0.0.1"); d.Kind != auth.Refuse || d.Reason != auth.ReasonNotPasscode {
		t.Errorf("password after enable: %+v", d)
	}

	out, _ = cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "Thunderbird")
	m := passcodeLineRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no grouped passcode line in:\n%s", out)
	}
	for _, want := range []string{"App passcode for alice (Thunderbird):", "shown only this once", `Run "kanmon reload -config ` + cfg + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("add output lacks %q:\n%s", want, out)
		}
	}
	code := m[1]
	if d := decideFromFiles(t, dir, "Alice", strings.ToLower(code), "192.0.2.1"); d.Kind != auth.Passcode || d.App != "Thunderbird" || d.User != "alice" {
		t.Errorf("passcode login: %+v", d)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "accounts.toml"))
	if bytes.Contains(data, []byte(strings.ReplaceAll(code, " ", ""))) {
		t.Fatalf("accounts file contains the passcode")
	}

	_, errOut = cliMust(t, 1, "passcode", "add", "-config", cfg, "alice", "THUNDERBIRD")
	if !strings.Contains(errOut, `already has a passcode named "Thunderbird"`) {
		t.Errorf("duplicate add: %q", errOut)
	}
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "iPhone")
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "bob")

	out, _ = cliMust(t, 0, "passcode", "list", "-config", cfg)
	for _, want := range []string{"USER", "APP", "CREATED", "Thunderbird", "iPhone", "bob"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hmac") {
		t.Errorf("list shows hashes:\n%s", out)
	}
	out, _ = cliMust(t, 0, "passcode", "list", "-config", cfg, "ALICE")
	if strings.Contains(out, "bob") || !strings.Contains(out, "iPhone") {
		t.Errorf("list ALICE:\n%s", out)
	}
	cliMust(t, 1, "passcode", "list", "-config", cfg, "carol")

	out, _ = cliMust(t, 0, "check", "-config", cfg)
	if out != "ok: 2 listeners, 2 2FA accounts, 2 passcodes\n" {
		t.Errorf("check: %q", out)
	}

	out, _ = cliMust(t, 0, "passcode", "revoke", "-config", cfg, "alice", "thunderbird")
	if !strings.Contains(out, "Thunderbird") || !strings.Contains(out, "kanmon reload") {
		t.Errorf("revoke: %q", out)
	}
	if d := decideFromFiles(t, dir, "alice", code, "127.0.0.1"); d.Kind != auth.Refuse || d.Reason != auth.ReasonNoMatch {
		t.Errorf("revoked passcode: %+v", d)
	}
	_, errOut = cliMust(t, 1, "passcode", "revoke", "-config", cfg, "alice", "Thunderbird")
	if !strings.Contains(errOut, `no passcode named "Thunderbird"`) {
		t.Errorf("second revoke: %q", errOut)
	}

	out, _ = cliMust(t, 0, "2fa", "disable", "-config", cfg, "Alice")
	if !strings.Contains(out, "2FA is now off for alice; 1 app passcode(s) removed") {
		t.Errorf("disable: %q", out)
	}
	if d := decideFromFiles(t, dir, "alice", "alice-password", "127.0.0.1"); d.Kind != auth.Passthrough {
		t.Errorf("password inside after disable: %+v", d)
	}
	cliMust(t, 1, "2fa", "disable", "-config", cfg, "alice")
	cliMust(t, 0, "2fa", "disable", "-config", cfg, "bob")
	out, _ = cliMust(t, 0, "passcode", "list", "-config", cfg)
	if !strings.Contains(out, "No account has 2FA on") {
		t.Errorf("empty list: %q", out)
	}
}

func TestCLIFlagsAnywhere(t *testing.T) {
	_, cfg := accountsTestDir(t)
	cliMust(t, 0, "2fa", "enable", "alice", "-config", cfg)
	cliMust(t, 0, "passcode", "add", "alice", "-config", cfg, "Thunderbird")
	out, _ := cliMust(t, 0, "passcode", "add", "-config", cfg, "--", "alice", "-odd-app")
	if !strings.Contains(out, "(-odd-app)") {
		t.Errorf("app after --: %q", out)
	}
}

func TestCLIUsage(t *testing.T) {
	_, cfg := accountsTestDir(t)
	for _, args := range [][]string{
		{"passcode"},
		{"passcode", "frob", "-config", cfg},
		{"passcode", "add", "alice", "Thunderbird"},
		{"passcode", "add", "-config", cfg, "alice"},
		{"passcode", "add", "-config", cfg, "alice", "a", "b"},
		{"passcode", "add", "-config"},
		{"passcode", "add", "-bogus", "-config", cfg, "alice", "x"},
		{"passcode", "list", "-config", cfg, "alice", "bob"},
		{"passcode", "revoke", "-config", cfg, "alice"},
		{"2fa"},
		{"2fa", "on", "-config", cfg, "alice"},
		{"2fa", "enable", "-config", cfg},
		{"2fa", "disable", "-config", cfg, "alice", "bob"},
		{"check"},
		{"check", "-config", cfg, "extra"},
	} {
		if code, out, errOut := cliRun(args...); code != 2 || errOut == "" {
			t.Errorf("kanmon %q: exit %d, stdout %q, stderr %q; want exit 2 and usage on stderr", args, code, out, errOut)
		}
	}
	for _, args := range [][]string{{"passcode", "help"}, {"2fa", "-h"}, {"passcode", "add", "-h"}, {"check", "-help"}} {
		if code, _, _ := cliRun(args...); code != 0 {
			t.Errorf("kanmon %q: exit %d, want 0", args, code)
		}
	}
}

func TestCLIBadNames(t *testing.T) {
	_, cfg := accountsTestDir(t)
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	for _, app := range []string{"", strings.Repeat("x", 65), "Thunder\nbird", " iPhone"} {
		if code, _, _ := cliRun("passcode", "add", "-config", cfg, "alice", app); code != 1 {
			t.Errorf("app %q: exit %d, want 1", app, code)
		}
	}
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", strings.Repeat("é", 64))
	for _, user := range []string{"", "bad\x00user", " alice"} {
		if code, _, _ := cliRun("2fa", "enable", "-config", cfg, user); code != 1 {
			t.Errorf("user %q: exit %d, want 1", user, code)
		}
	}
}

func TestCLICheckErrors(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	accounts := filepath.Join(dir, "accounts.toml")
	for _, tc := range []struct{ name, accounts, want string }{
		{"unknown key", "[[account]]\nuser = \"alice\"\npassword = \"x\"\n", accounts + `:3: unknown key "account.password"`},
		{"duplicate user", "[[account]]\nuser = \"alice\"\n\n[[account]]\nuser = \"Alice\"\n", accounts + `:4: account "Alice": user is listed twice (also line 1)`},
		{"malformed hash", "[[account]]\nuser = \"alice\"\n[[account.passcode]]\napp = \"T\"\nhash = \"x\"\n", accounts + `:5: account "alice": passcode "T": malformed hash`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(accounts, []byte(tc.accounts), 0o600); err != nil {
				t.Fatal(err)
			}
			_, errOut := cliMust(t, 1, "check", "-config", cfg)
			if !strings.HasPrefix(errOut, tc.want) {
				t.Errorf("stderr %q, want prefix %q", errOut, tc.want)
			}
			// Writers refuse to touch a broken file.
			cliMust(t, 1, "2fa", "enable", "-config", cfg, "zed")
			if data, _ := os.ReadFile(accounts); string(data) != tc.accounts {
				t.Errorf("broken accounts file was rewritten")
			}
		})
	}
	if err := os.WriteFile(cfg, []byte(designConfigText(t)+"bogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut := cliMust(t, 1, "check", "-config", cfg)
	if !strings.HasPrefix(errOut, cfg+":") {
		t.Errorf("config error %q does not start with %s:", errOut, cfg)
	}
}

func TestCLICheckMissingPepper(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "Thunderbird")
	if err := os.Remove(filepath.Join(dir, "state", "pepper")); err != nil {
		t.Fatal(err)
	}
	out, errOut := cliMust(t, 0, "check", "-config", cfg)
	if !strings.HasPrefix(out, "ok:") || !strings.Contains(errOut, "warning: "+filepath.Join(dir, "state", "pepper")+" is missing") {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "pepper")); !os.IsNotExist(err) {
		t.Errorf("check created a pepper")
	}
}

// Two admins (here twenty) adding passcodes at once lose none.
func TestCLIConcurrentAdds(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	const n = 20
	codes := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			code, out, errOut := cliRun("passcode", "add", "-config", cfg, "alice", fmt.Sprintf("app-%02d", i))
			if m := passcodeLineRE.FindStringSubmatch(out); code == 0 && m != nil {
				codes[i] = m[1]
			} else {
				t.Errorf("add %d: exit %d\n%s%s", i, code, out, errOut)
			}
		})
	}
	wg.Wait()
	accts, err := auth.LoadAccounts(filepath.Join(dir, "accounts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := accts.NumPasscodes(); got != n {
		t.Fatalf("%d passcodes stored, want %d", got, n)
	}
	for i, code := range codes {
		if d := decideFromFiles(t, dir, "alice", code, "192.0.2.1"); d.Kind != auth.Passcode || d.App != fmt.Sprintf("app-%02d", i) {
			t.Errorf("passcode %d: %+v", i, d)
		}
	}
}
