package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/otp"
)

// stampRE matches the RFC 3339 times that kanmon 2fa status prints.
const stampRE = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`

func TestCLITwoFAStatus(t *testing.T) {
	dir, cfg := accountsTestDir(t)

	_, errOut := cliMust(t, 1, "2fa", "status", "-config", cfg, "alice")
	if errOut != "kanmon 2fa status: alice does not have 2FA on\n" {
		t.Errorf("unknown user: %q", errOut)
	}

	// An account the admin turned on: no authenticator.
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "Thunderbird")
	cliMust(t, 0, "passcode", "add", "-config", cfg, "-protocols", "imap,submission", "alice", "iPhone")
	out, _ := cliMust(t, 0, "2fa", "status", "-config", cfg, "ALICE")
	want := regexp.MustCompile(`^alice: 2FA on since ` + stampRE + `
no authenticator: passcodes managed by the admin
one-time codes left: 0
passcodes: 2
  APP          CREATED               PROTOCOLS
  Thunderbird  ` + stampRE + `  all
  iPhone       ` + stampRE + `  imap,submission
$`)
	if !want.MatchString(out) {
		t.Errorf("status of an admin account:\n%s", out)
	}

	// An account enrolled through the portal, one one-time code used.
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	store, state := auth.OpenStore(filepath.Join(dir, "accounts.toml")), filepath.Join(dir, "state")
	codes, err := auth.EnrollTOTP(store, state, "bob", secret)
	if err != nil {
		t.Fatal(err)
	}
	var g otp.ReplayGuard
	if _, ok, err := auth.CheckSecondFactor(store, state, "bob", codes[0], time.Now(), &g); !ok || err != nil {
		t.Fatalf("one-time code: %v %v", ok, err)
	}
	second, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.AddAuthenticator(store, state, "bob", "Authy desktop", second); err != nil {
		t.Fatal(err)
	}
	out, _ = cliMust(t, 0, "2fa", "status", "-config", cfg, "Bob")
	want = regexp.MustCompile(`^bob: 2FA on since ` + stampRE + `
authenticators \(TOTP\): 2 of at most 5
  NAME +ADDED +LAST USED +FROM
  Authenticator +` + stampRE + ` +never *
  Authy desktop +` + stampRE + ` +never *
one-time codes left: 9
passcodes: none
$`)
	if !want.MatchString(out) {
		t.Errorf("status of a portal account:\n%s", out)
	}
	key := otp.FormatKey(secret)
	for _, secretText := range append([]string{"hmac-sha256", "aes-256-gcm", key, strings.ReplaceAll(key, " ", "")}, codes...) {
		if strings.Contains(out, secretText) {
			t.Errorf("status shows %q:\n%s", secretText, out)
		}
	}

	// remove-authenticator takes one of several, never the last.
	out, _ = cliMust(t, 0, "2fa", "remove-authenticator", "-config", cfg, "bob", "AUTHENTICATOR")
	if !strings.Contains(out, "Removed the authenticator Authenticator of bob") {
		t.Errorf("remove-authenticator:\n%s", out)
	}
	if _, errOut := cliMust(t, 1, "2fa", "remove-authenticator", "-config", cfg, "bob", "Authy desktop"); !strings.Contains(errOut, "only authenticator") {
		t.Errorf("removing the last authenticator:\n%s", errOut)
	}
	if out, _ := cliMust(t, 0, "2fa", "status", "-config", cfg, "bob"); strings.Contains(out, "  Authenticator ") || !strings.Contains(out, "Authy desktop") {
		t.Errorf("status after remove-authenticator:\n%s", out)
	}

	// 2fa disable removes the authenticator with the account.
	cliMust(t, 0, "2fa", "disable", "-config", cfg, "bob")
	cliMust(t, 1, "2fa", "status", "-config", cfg, "bob")

	for _, args := range [][]string{
		{"2fa", "status", "-config", cfg},
		{"2fa", "status", "-config", cfg, "alice", "bob"},
		{"2fa", "status", "alice"},
	} {
		if code, _, errOut := cliRun(args...); code != 2 || !strings.Contains(errOut, "usage: kanmon 2fa status -config FILE USER") {
			t.Errorf("kanmon %q: exit %d, stderr %q; want exit 2 and usage", args, code, errOut)
		}
	}
	if _, out, _ := cliRun("2fa", "help"); !strings.Contains(out, "kanmon 2fa status  -config FILE USER") {
		t.Errorf("2fa help lacks status:\n%s", out)
	}
}

func TestCLICheckMalformedTOTP(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	accounts := writeAccounts(t, dir, "[[account]]\nuser = \"alice\"\nenabled = 2026-11-25T12:00:00Z\ntotp = \"ABCD EFGH IJKL MNOP\"\ntotp_enrolled = 2026-11-25T12:00:00Z\n")
	_, errOut := cliMust(t, 1, "check", "-config", cfg)
	if want := accounts + `:4: account "alice": malformed totp`; !strings.HasPrefix(errOut, want) {
		t.Errorf("stderr %q, want prefix %q", errOut, want)
	}
	cliMust(t, 1, "2fa", "status", "-config", cfg, "alice")
}

// kanmon check warns, without creating it, when totp.key is gone while
// accounts have an authenticator.
func TestCLICheckMissingTOTPKey(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if _, err := auth.EnrollTOTP(auth.OpenStore(filepath.Join(dir, "accounts.toml")), state, "bob", secret); err != nil {
		t.Fatal(err)
	}
	if _, errOut := cliMust(t, 0, "check", "-config", cfg); strings.Contains(errOut, "totp.key") {
		t.Errorf("check with the key in place warns: %q", errOut)
	}
	if err := os.Remove(auth.TOTPKeyPath(state)); err != nil {
		t.Fatal(err)
	}
	out, errOut := cliMust(t, 0, "check", "-config", cfg)
	if !strings.HasPrefix(out, "ok:") || !strings.Contains(errOut, "warning: "+auth.TOTPKeyPath(state)+" is missing: the 1 registered authenticators") {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	if _, err := os.Stat(auth.TOTPKeyPath(state)); !os.IsNotExist(err) {
		t.Errorf("check created a TOTP key")
	}
}
