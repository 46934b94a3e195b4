package proxy_test

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// loginFailure is a backend that misbehaves during kanmon's login, told as
// a backendScript, and how Login must classify it.
type loginFailure struct {
	name  string
	mode  string   // the backend's TLS mode
	steps []string // backendScript steps
	// authFailed is a refusal of the credentials (the user's own
	// password, on passthrough), not a temporary failure.
	authFailed bool
	detail     string // in the error, for the log
	refusal    string // the backend's line passed on to the client
}

// backendLoginFunc runs Backend.Login for one protocol (backendLogin,
// submissionLogin).
type backendLoginFunc func(t *testing.T, b *backend.Backend, cred backend.Credentials) (*backend.Login, *backend.LoginError)

// wantLoginFailures runs each case against a scripted backend through
// login, and one backend that never answers, which must fail at the
// backend timeout.
func wantLoginFailures(t *testing.T, login backendLoginFunc, clientTLS *tls.Config, cases []loginFailure) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := startTCPServer(t, backendScript(t, nil, tc.steps...))
			_, le := login(t, &backend.Backend{Address: fake.addr, TLSMode: tc.mode, TLSConfig: clientTLS}, masterCred)
			if le == nil {
				t.Fatal("login succeeded")
			}
			if le.AuthFailed != tc.authFailed || !strings.Contains(le.Error(), tc.detail) {
				t.Errorf("got AuthFailed %v, %q; want %v, %q", le.AuthFailed, le.Error(), tc.authFailed, tc.detail)
			}
			if le.ClientLine != tc.refusal {
				t.Errorf("client line %q, want %q", le.ClientLine, tc.refusal)
			}
		})
	}
	t.Run("never answers", func(t *testing.T) {
		silent := startTCPServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
		start := time.Now()
		_, le := login(t, &backend.Backend{Address: silent.addr, Timeout: 300 * time.Millisecond}, masterCred)
		if le == nil || le.AuthFailed || !strings.Contains(le.Error(), "reading backend greeting") {
			t.Errorf("got %v", le)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("failed after %v, want about the 300ms timeout", d)
		}
	})
}
