package main

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/proxy"
)

// The portal's reload reads the accounts file again under the config in
// force: a passcode it revoked stops standing even while kanmon.toml is
// broken, which stops the full reload.
func TestReloadAccountsIgnoresABrokenConfig(t *testing.T) {
	cfgPath := kanmontest.WriteFiles(t, kanmontest.Options{
		IMAPBackend: "127.0.0.1:1", MasterUser: "kanmon", MasterPassword: "master-pw",
		Listeners: []string{"none"},
	}).ConfigPath
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	store := auth.OpenStore(cfg.Accounts)
	if _, err := auth.EnableTwoFA(store, "alice"); err != nil {
		t.Fatal(err)
	}
	code, err := auth.AddPasscode(store, cfg.StateDir, "alice", "Thunderbird")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := proxy.LoadGeneration(cfg)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := proxy.OpenLockout(rt)
	if err != nil {
		t.Fatal(err)
	}
	defer guard.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := proxy.NewServer(log, rt, proxy.ServerOptions{Lockout: guard})
	attempt := auth.Attempt{User: "alice", Secret: code, Protocol: config.ProtocolIMAP}
	if d := srv.Generation().Policy.Decide(attempt); d.Kind != auth.Passcode {
		t.Fatalf("before the revocation: %v", d.Kind)
	}

	if _, _, err := auth.RevokePasscode(store, "alice", "Thunderbird"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte("bogus_key = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reload(srv, guard, &accountsSource{}, cfgPath, log); err == nil {
		t.Fatal("the full reload accepted a broken config")
	}
	if d := srv.Generation().Policy.Decide(attempt); d.Kind != auth.Passcode {
		t.Fatalf("a failed full reload changed the policy: %v", d.Kind)
	}
	if err := reloadAccounts(srv, guard, &accountsSource{}, log); err != nil {
		t.Fatalf("reloadAccounts: %v", err)
	}
	if d := srv.Generation().Policy.Decide(attempt); d.Kind == auth.Passcode {
		t.Errorf("the revoked passcode still stands after reloadAccounts")
	}
	if srv.Generation().Config != cfg {
		t.Errorf("reloadAccounts replaced the configuration")
	}
}
