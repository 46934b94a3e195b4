//go:build unix

package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/pgtest"
)

// accounts import copies an accounts file into PostgreSQL, idempotently,
// and export writes it back byte for byte; the commands of the file
// (passcode add, 2fa status) work on the database as on the file; a file
// config refuses import with a clear message.
func TestCLIAccountsImportExport(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	dir, fileCfg := accountsTestDir(t)
	// Some accounts in the file, made by the CLI.
	cliMust(t, 0, "2fa", "enable", "-config", fileCfg, "alice")
	cliMust(t, 0, "2fa", "enable", "-config", fileCfg, "bob@example.edu")
	cliMust(t, 0, "passcode", "add", "-config", fileCfg, "alice", "Thunderbird")
	cliMust(t, 0, "passcode", "add", "-config", fileCfg, "-protocols", "imap,submission", "alice", "iPhone")
	cliMust(t, 0, "passcode", "add", "-config", fileCfg, "bob@example.edu", "Outlook")
	accountsFile := filepath.Join(dir, "accounts.toml")
	original, err := os.ReadFile(accountsFile)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := cliMust(t, 1, "accounts", "import", "-config", fileCfg, accountsFile)
	_ = out

	// A second config for the same state_dir, its accounts in PostgreSQL.
	dbCfg := filepath.Join(dir, "kanmon-db.toml")
	dbURL := pg.URL() + "&passfile=" + url.QueryEscape(pg.PassFile(t))
	text := strings.Replace(designConfigText(t), `accounts  = "accounts.toml"`, fmt.Sprintf("accounts  = %q", dbURL), 1)
	if !strings.Contains(text, dbURL) {
		t.Fatal("the design config has no accounts line to replace")
	}
	if err := os.WriteFile(dbCfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = cliMust(t, 0, "accounts", "import", "-config", dbCfg, accountsFile)
	if !strings.Contains(out, "2 added, 0 replaced, 0 unchanged") {
		t.Fatalf("first import: %s", out)
	}
	out, _ = cliMust(t, 0, "accounts", "import", "-config", dbCfg, accountsFile)
	if !strings.Contains(out, "0 added, 0 replaced, 2 unchanged") {
		t.Fatalf("second import: %s", out)
	}
	exported, _ := cliMust(t, 0, "accounts", "export", "-config", dbCfg)
	if exported != string(original) {
		t.Fatalf("export differs from the imported file:\n--- file\n%s\n--- export\n%s", original, exported)
	}
	// The commands work on the database.
	cliMust(t, 0, "passcode", "add", "-config", dbCfg, "ALICE", "Tablet")
	status, _ := cliMust(t, 0, "2fa", "status", "-config", dbCfg, "alice")
	for _, app := range []string{"Thunderbird", "iPhone", "Tablet"} {
		if !strings.Contains(status, app) {
			t.Errorf("2fa status lacks %s:\n%s", app, status)
		}
	}
	cliMust(t, 0, "check", "-config", dbCfg)
}
