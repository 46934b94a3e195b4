package proxy_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// passwordBackend is an IMAP Backend at addr as the portal's password
// check uses it.
func passwordBackend(t *testing.T, addr, forward string) *backend.Backend {
	t.Helper()
	b, err := backend.New(config.ProtocolIMAP, &config.Backend{
		Address: addr, TLS: config.TLSNone, MasterUser: masterUser, MasterPassword: masterPW,
		Timeout: config.Duration{Duration: ioTimeout}, ForwardClientIP: forward,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The portal's password check against the in-process backend: the right
// password passes, a wrong one or an unknown user is a rejection, a dead
// backend is neither.
func TestCheckPassword(t *testing.T) {
	_, addr := kanmontest.StartMemIMAP(t, masterUser, masterPW, map[string]string{"carol": carolPW})
	b := passwordBackend(t, addr, config.ForwardNone)
	ctx := context.Background()

	if err := b.CheckPassword(ctx, "carol", carolPW, backend.ClientInfo{}); err != nil {
		t.Errorf("right password: %v", err)
	}
	for _, tc := range []struct{ user, pw string }{{"carol", "wrong-pw"}, {"nobody", carolPW}} {
		err := b.CheckPassword(ctx, tc.user, tc.pw, backend.ClientInfo{})
		if !errors.Is(err, backend.ErrPasswordRejected) {
			t.Errorf("%s/%s: got %v, want ErrPasswordRejected", tc.user, tc.pw, err)
		}
		noLeak(t, err.Error(), tc.pw)
	}
	err := passwordBackend(t, deadAddr(t), config.ForwardNone).CheckPassword(ctx, "carol", carolPW, backend.ClientInfo{})
	if err == nil || errors.Is(err, backend.ErrPasswordRejected) {
		t.Errorf("dead backend: got %v, want an error that is not a rejection", err)
	}
}

// The check is a passthrough login with the client's address forwarded
// as for IMAP (forward_client_ip = "id"), then a LOGOUT.
func TestCheckPasswordTranscript(t *testing.T) {
	client := backend.ClientInfo{Addr: netip.MustParseAddrPort("192.0.2.7:40000"), Session: "portal-1"}
	greeting := "S: * OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN] ready"
	id := []string{
		`C: k3 ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "40000" "x-session-id" "portal-1")`,
		"S: k3 OK ID completed",
	}
	auth := "C: k1 AUTHENTICATE PLAIN " + plainIR("", "carol", carolPW)
	t.Run("accepted", func(t *testing.T) {
		srv := startTCPServer(t, backendScript(t, nil, append(append([]string{greeting}, id...),
			auth,
			"S: k1 OK [CAPABILITY IMAP4rev1] logged in",
			"C: k4 LOGOUT",
			"S: * BYE logging out",
			"S: k4 OK LOGOUT completed",
		)...))
		if err := passwordBackend(t, srv.addr, config.ForwardID).CheckPassword(context.Background(), "carol", carolPW, client); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		srv := startTCPServer(t, backendScript(t, nil, append(append([]string{greeting}, id...),
			auth,
			"S: k1 NO [AUTHENTICATIONFAILED] Authentication failed.",
		)...))
		err := passwordBackend(t, srv.addr, config.ForwardID).CheckPassword(context.Background(), "carol", carolPW, client)
		if !errors.Is(err, backend.ErrPasswordRejected) {
			t.Fatalf("got %v, want ErrPasswordRejected", err)
		}
		noLeak(t, err.Error(), carolPW, b64(carolPW))
	})
	t.Run("temporary", func(t *testing.T) {
		srv := startTCPServer(t, backendScript(t, nil, append(append([]string{greeting}, id...),
			auth,
			"S: k1 NO [UNAVAILABLE] Try again later.",
		)...))
		err := passwordBackend(t, srv.addr, config.ForwardID).CheckPassword(context.Background(), "carol", carolPW, client)
		if err == nil || errors.Is(err, backend.ErrPasswordRejected) {
			t.Fatalf("got %v, want an error that is not a rejection", err)
		}
	})
}
