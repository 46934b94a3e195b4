package main

import (
	"os"
	"strings"
	"testing"
)

// kanmon check warns about each backend that gets passthrough logins but
// not the client's address: Dovecot's auth penalty, kept per address, would
// then slow every user after a spray from the campus (issue 18). No
// passthrough, no warning; it is a warning, not an error.
func TestCLICheckForwardClientIP(t *testing.T) {
	const (
		warnIMAP = `warning: [backend.imap] forward_client_ip = "none": the backend sees every passthrough login as coming from kanmon, ` +
			`so its per-address penalty (Dovecot's auth penalty) slows all users after a spray; ` +
			`set forward_client_ip and the backend's trusted networks (README, "Setting up the backend")` + "\n"
		warnPOP3 = `warning: [backend.pop3] forward_client_ip = "none": `
		// The design config's [backend.imap] is its last table.
		imapID = "forward_client_ip = \"id\"\n"
		pop3   = "\n[[listener]]\nprotocol = \"pop3\"\naddress = \"127.0.0.1:21995\"\ntls = \"implicit\"\n\n" +
			"[backend.pop3]\naddress = \"127.0.0.1:11110\"\nmaster_user = \"kanmon\"\nmaster_password = \"master-pw\"\n"
		noTrusted = "trusted_networks = []"
	)
	trusted := `trusted_networks = ["127.0.0.1/32"]`
	for _, tc := range []struct {
		name string
		// replace are old, new pairs applied to the design config;
		// extra is appended to it.
		replace []string
		extra   string
		want    []string
		notWant []string
	}{
		{name: "design config, nothing forwarded", want: []string{warnIMAP}},
		{name: "imap forwards", extra: imapID, notWant: []string{"forward_client_ip"}},
		{name: "pop3 does not", extra: imapID + pop3, want: []string{warnPOP3}, notWant: []string{"[backend.imap]"}},
		{name: "pop3 forwards too", extra: imapID + strings.Replace(pop3, "master_user", "forward_client_ip = \"xclient\"\nmaster_user", 1),
			notWant: []string{"forward_client_ip"}},
		{name: "no passthrough", replace: []string{trusted, noTrusted}, notWant: []string{"forward_client_ip"}},
		{name: "passthrough from anywhere", replace: []string{trusted, noTrusted, "require_2fa_outside = true", "require_2fa_outside = false"},
			want: []string{warnIMAP}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cfg := accountsTestDir(t)
			text := designConfigText(t)
			for i := 0; i+1 < len(tc.replace); i += 2 {
				if !strings.Contains(text, tc.replace[i]) {
					t.Fatalf("the design config lacks %q", tc.replace[i])
				}
				text = strings.Replace(text, tc.replace[i], tc.replace[i+1], 1)
			}
			if err := os.WriteFile(cfg, []byte(text+tc.extra), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut := cliMust(t, 0, "check", "-config", cfg)
			if !strings.HasPrefix(out, "ok: ") {
				t.Errorf("stdout %q, want ok", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(errOut, w) {
					t.Errorf("stderr has %q:\n%s", w, errOut)
				}
			}
		})
	}
}
