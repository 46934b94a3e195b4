package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// kanmon check loads the [tls] certificate as serve would, and warns
// (exit 0) when serve could not start with it or when it runs out soon.
func TestCLICheckCertificate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		notAfter time.Duration // 0: no certificate files
		want     string
	}{
		{"valid for 90 days", 90 * 24 * time.Hour, ""},
		{"expires in 3 days", 3 * 24 * time.Hour, "in less than 14 days"},
		{"expired", -time.Hour, "expired on"},
		{"missing", 0, "kanmon serve will not start until it loads"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, cfg := accountsTestDir(t)
			if tc.notAfter != 0 {
				cert, err := selfsigned.NewUntil(time.Now().Add(tc.notAfter), "mail.example.edu")
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := cert.WriteFiles(dir, "cert.pem", "key.pem"); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(filepath.Join(dir, "cert.pem")); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			out, errOut := cliMust(t, 0, "check", "-config", cfg)
			if !strings.HasPrefix(out, "ok: ") {
				t.Errorf("stdout %q, want ok", out)
			}
			var got string
			for _, l := range strings.Split(errOut, "\n") {
				if strings.HasPrefix(l, "warning: [tls]") {
					got = l
				}
			}
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("stderr:\n%s\nwant a [tls] warning containing %q", errOut, tc.want)
			}
		})
	}
}
