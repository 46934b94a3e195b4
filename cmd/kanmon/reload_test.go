package main

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
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

// kanmon_tls_certificate_expiry_timestamp_seconds is the notAfter of the
// certificate in force: a renewed certificate written over the old one
// shows once `kanmon reload` (what SIGHUP runs) has put it in force.
func TestReloadMovesCertificateExpiry(t *testing.T) {
	s := startServeFiles(t, "127.0.0.1:1", kanmontest.Options{MetricsAddress: true})
	expiry := func() string {
		t.Helper()
		const name = "kanmon_tls_certificate_expiry_timestamp_seconds "
		for line := range strings.Lines(scrapeMetrics(t, s.MetricsAddr)) {
			if v, ok := strings.CutPrefix(line, name); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					t.Fatalf("%s%s: %v", name, v, err)
				}
				return time.Unix(int64(f), 0).UTC().Format(time.RFC3339)
			}
		}
		t.Fatalf("the scrape lacks %s", name)
		return ""
	}
	block, _ := pem.Decode(s.CertPEM)
	first, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := expiry(), first.NotAfter.UTC().Format(time.RFC3339); got != want {
		t.Errorf("at start: %s, want the certificate's notAfter %s", got, want)
	}

	notAfter := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	renewed, err := selfsigned.NewUntil(notAfter, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := renewed.WriteFiles(s.Dir, "cert.pem", "key.pem"); err != nil {
		t.Fatal(err)
	}
	if got, want := expiry(), first.NotAfter.UTC().Format(time.RFC3339); got != want {
		t.Errorf("renewed but not reloaded: %s, want the certificate in force's %s", got, want)
	}
	cliMust(t, 0, "reload", "-config", s.ConfigPath)
	if got, want := expiry(), notAfter.UTC().Format(time.RFC3339); got != want {
		t.Errorf("after the reload: %s, want the renewed certificate's %s", got, want)
	}
}
