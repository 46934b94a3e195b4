package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// The config the .deb installs as /etc/kanmon/kanmon.toml passes kanmon
// check, without a warning, once the certificate it names and the
// master.pw the postinst makes are next to it. scripts/deb-test.sh checks
// the installed file the same way, as root; this runs everywhere.
func TestPackagedConfig(t *testing.T) {
	data, err := os.ReadFile("../../packaging/kanmon.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	text := strings.ReplaceAll(string(data), `"/var/lib/kanmon`, `"`+filepath.Join(dir, "state"))
	if text == string(data) {
		t.Fatal("packaging/kanmon.toml does not keep its state in /var/lib/kanmon, the postinst's and the unit's state directory")
	}
	cfg := filepath.Join(dir, "kanmon.toml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.pw"), []byte("from-the-postinst\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := selfsigned.NewUntil(time.Now().Add(90*24*time.Hour), "kanmon.test")
	if err == nil {
		err = os.Mkdir(filepath.Join(dir, "tls"), 0o750)
	}
	if err == nil {
		_, _, err = cert.WriteFiles(filepath.Join(dir, "tls"), "fullchain.pem", "privkey.pem")
	}
	if err != nil {
		t.Fatal(err)
	}
	out, errOut := cliMust(t, 0, "check", "-config", cfg)
	if !strings.HasPrefix(out, "ok: 6 listeners, 0 2FA accounts") || errOut != "" {
		t.Errorf("kanmon check: stdout %q, stderr %q; want ok and no warning", out, errOut)
	}
}
