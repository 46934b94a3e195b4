package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withUsers appends a [users] section to the config at cfg.
func withUsers(t *testing.T, cfg, section string) {
	t.Helper()
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n[users]\n" + section + "\n"); err != nil {
		t.Fatal(err)
	}
}

// The CLI takes any spelling of a user and stores the canonical name.
func TestCLIUserSpellings(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	withUsers(t, cfg, `domains = ["example.edu"]`)
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "Alice@EXAMPLE.edu")
	cliMust(t, 0, "passcode", "add", "-config", cfg, "ALICE", "Thunderbird")
	out, _ := cliMust(t, 0, "2fa", "status", "-config", cfg, "alice@example.edu")
	if !strings.Contains(out, "alice") {
		t.Errorf("status: %q", out)
	}
	text, err := os.ReadFile(filepath.Join(dir, "accounts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(text), "[[account]]") != 1 || !strings.Contains(string(text), `user = "alice"`) {
		t.Errorf("accounts file does not hold one account named alice:\n%s", text)
	}
	_, errOut := cliMust(t, 1, "2fa", "enable", "-config", cfg, "alice@other.example")
	if !strings.Contains(errOut, "not configured") {
		t.Errorf("a foreign domain: stderr %q", errOut)
	}
	cliMust(t, 0, "passcode", "revoke", "-config", cfg, "Alice@example.edu", "thunderbird")
}

// kanmon check refuses an accounts file with two entries that fold to one
// account, naming both lines, and warns when [users] lists no domains.
func TestCLICheckUserNames(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	writeAccounts(t, dir, "[[account]]\nuser = \"alice\"\nenabled = 2026-01-01T00:00:00Z\n\n[[account]]\nuser = \"Alice@Example.edu\"\nenabled = 2026-01-01T00:00:00Z\n")
	_, errOut := cliMust(t, 0, "check", "-config", cfg)
	if !strings.Contains(errOut, "warning: [users] domains is empty") {
		t.Errorf("no warning for empty domains: %q", errOut)
	}
	withUsers(t, cfg, `domains = ["example.edu"]`)
	_, errOut = cliMust(t, 1, "check", "-config", cfg)
	if !strings.Contains(errOut, `accounts "alice" (line 1) and "Alice@Example.edu" (line 5) are one account, "alice"`) {
		t.Errorf("stderr %q", errOut)
	}
}

// writeAccounts writes doc as the accounts file in dir and returns its
// path.
func writeAccounts(t *testing.T, dir, doc string) string {
	t.Helper()
	accounts := filepath.Join(dir, "accounts.toml")
	if err := os.WriteFile(accounts, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return accounts
}
