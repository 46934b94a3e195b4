// Package contrib_test checks the files in contrib/ and the Dockerfile:
// the sample configs pass what `kanmon check` runs, and the systemd unit
// and the image agree with the layout the samples use.
package contrib_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

// The layout every sample, the unit and the image share.
const (
	configPath = "/etc/kanmon/kanmon.toml"
	stateDir   = "/var/lib/kanmon"
)

// loadSample copies a sample config into a temp dir, as if it were
// /etc/kanmon/kanmon.toml, with /var/lib/kanmon moved into the temp dir
// and a placeholder master password file, and loads it as `kanmon check`
// does: config.Load, then auth.LoadAccounts.
func loadSample(t *testing.T, name string) (*config.Config, string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("config", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	text := strings.ReplaceAll(string(data), stateDir, state)
	path := filepath.Join(dir, "kanmon.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.pw"), []byte("placeholder-master-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("kanmon check %s: %v", name, err)
	}
	if _, err := auth.LoadAccounts(cfg.Accounts); err != nil {
		t.Fatalf("kanmon check %s: %v", name, err)
	}
	return cfg, state
}

func TestSampleConfigs(t *testing.T) {
	samples, err := filepath.Glob("config/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) < 2 {
		t.Fatalf("want the Dovecot and Zimbra samples, found %q", samples)
	}
	for _, s := range samples {
		name := filepath.Base(s)
		t.Run(name, func(t *testing.T) {
			cfg, state := loadSample(t, name)
			if cfg.StateDir != state || filepath.Dir(cfg.Accounts) != state {
				t.Errorf("state_dir %s, accounts %s: want both in %s (the unit's StateDirectory, the image's volume)", cfg.StateDir, cfg.Accounts, stateDir)
			}
			for _, b := range []*config.Backend{cfg.Backend.IMAP, cfg.Backend.POP3, cfg.Backend.Submission} {
				if b == nil {
					continue
				}
				if b.MasterPassword != "placeholder-master-pw" {
					t.Errorf("backend %s: master password %q, want it read from master.pw", b.Address, b.MasterPassword)
				}
				if b.TLS == config.TLSNone {
					t.Errorf("backend %s: tls = none in a sample for a remote backend", b.Address)
				}
			}
			if cfg.Lockout.Tarpit.Seconds() < 2 {
				t.Errorf("lockout.tarpit %s is shorter than the backends' own failure delay (2s)", cfg.Lockout.Tarpit.Duration)
			}

			// The accounts file lives where the CLI can rewrite it: what
			// `kanmon 2fa enable` and `kanmon passcode add` do. The state
			// directory exists by then (systemd's StateDirectory=, the
			// image's volume): the CLI does not create the directory of
			// the accounts file.
			if err := os.MkdirAll(state, 0o700); err != nil {
				t.Fatal(err)
			}
			store := auth.OpenStore(cfg.Accounts)
			if _, err := auth.EnableTwoFA(store, "alice"); err != nil {
				t.Fatal(err)
			}
			if _, err := auth.AddPasscode(store, cfg.StateDir, "alice", "Thunderbird"); err != nil {
				t.Fatal(err)
			}
			accts, err := auth.LoadAccounts(cfg.Accounts)
			if err != nil {
				t.Fatal(err)
			}
			if accts.NumPasscodes() != 1 {
				t.Errorf("%d passcodes after one passcode add", accts.NumPasscodes())
			}
		})
	}
}

// TestSampleListeners checks that the Dovecot sample (the complete one)
// listens on the six standard ports, the ones the image EXPOSEs and
// docs/clients.md tells users to set.
func TestSampleListeners(t *testing.T) {
	cfg, _ := loadSample(t, "kanmon-dovecot.toml")
	var got []string
	for _, l := range cfg.Listeners {
		got = append(got, l.Protocol+" "+l.TLS+" "+l.Address[strings.LastIndex(l.Address, ":")+1:])
	}
	want := []string{
		"imap implicit 993", "imap starttls 143",
		"pop3 implicit 995", "pop3 starttls 110",
		"submission implicit 465", "submission starttls 587",
	}
	if !slices.Equal(got, want) {
		t.Errorf("listeners %q, want %q", got, want)
	}
	docker := read(t, "../Dockerfile")
	if !strings.Contains(docker, "\nEXPOSE 993 143 995 110 465 587\n") {
		t.Error("Dockerfile: want EXPOSE 993 143 995 110 465 587")
	}
}

// unit reads a systemd unit into key → values (in order).
func unit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		kv[k] = append(kv[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestSystemdUnit(t *testing.T) {
	const path = "systemd/kanmon.service"
	u := unit(t, path)
	want := map[string]string{
		"Type":                    "simple",
		"User":                    "kanmon",
		"ExecStartPre":            "/usr/local/bin/kanmon check -config " + configPath,
		"ExecStart":               "/usr/local/bin/kanmon serve -config " + configPath,
		"ExecReload":              "/usr/local/bin/kanmon reload -config " + configPath,
		"KillSignal":              "SIGTERM",
		"StateDirectory":          "kanmon",
		"ReadWritePaths":          stateDir,
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"RestrictNamespaces":      "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallFilter":        "@system-service",
	}
	for k, v := range want {
		if !slices.Contains(u[k], v) {
			t.Errorf("%s: want %s=%s, have %q", path, k, v, u[k])
		}
	}
	// SIGTERM drains sessions for 10 s before kanmon exits: give it time.
	if len(u["TimeoutStopSec"]) != 1 {
		t.Errorf("%s: want one TimeoutStopSec=", path)
	} else if d, err := time.ParseDuration(u["TimeoutStopSec"][0]); err != nil || d < 15*time.Second {
		t.Errorf("%s: TimeoutStopSec=%s: want at least 15s (kanmon drains for 10 s)", path, u["TimeoutStopSec"][0])
	}

	// systemd-analyze verify, where installed, with the binary path
	// pointed at one that exists (it checks that ExecStart= is executable).
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed; skipped systemd-analyze verify")
		return
	}
	tmp := filepath.Join(t.TempDir(), "kanmon.service")
	text := strings.ReplaceAll(read(t, path), "/usr/local/bin/kanmon", "/bin/true")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sa, "verify", tmp).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestDockerfile(t *testing.T) {
	d := read(t, "../Dockerfile")
	for _, want := range []string{
		"\nFROM golang:1.26 AS build\n",
		"CGO_ENABLED=0",
		"go build -trimpath -ldflags '-s -w' -o /out/kanmon ./cmd/kanmon",
		"\nFROM gcr.io/distroless/static-debian12:nonroot\n",
		"\nUSER 65532:65532\n",
		`VOLUME ["/etc/kanmon", "` + stateDir + `"]`,
		`ENTRYPOINT ["/kanmon"]`,
		`CMD ["serve", "-config", "` + configPath + `"]`,
	} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile: missing %q", want)
		}
	}
	// Only the Go module proxy may be reached while building: no package
	// managers, no curl, no git clone.
	for _, bad := range regexp.MustCompile(`(?m)^RUN .*\b(apt|apt-get|apk|curl|wget|git)\b.*$`).FindAllString(d, -1) {
		t.Errorf("Dockerfile downloads outside the module proxy: %s", bad)
	}
	ignore := read(t, "../.dockerignore")
	if !regexp.MustCompile(`(?m)^\.git$`).MatchString(ignore) {
		t.Error(".dockerignore: want .git left out of the build context")
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
