package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/admin"
	"github.com/kanmon-mail/kanmon/auth"
)

func TestCLIPasscodeScope(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	out, _ := cliMust(t, 0, "passcode", "add", "--protocols", "imap,Submission", "-config", cfg, "alice", "Thunderbird")
	if !strings.Contains(out, "It works only for imap,submission.") {
		t.Errorf("add with a scope: %q", out)
	}
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "iPhone", "-protocols", "all")
	data, _ := os.ReadFile(filepath.Join(dir, "accounts.toml"))
	if !strings.Contains(string(data), `protocols = ["imap", "submission"]`) || strings.Count(string(data), "protocols") != 1 {
		t.Errorf("accounts file:\n%s", data)
	}
	_, errOut := cliMust(t, 2, "passcode", "add", "-protocols", "imap,smtp", "-config", cfg, "alice", "Outlook")
	if !strings.Contains(errOut, `unknown protocol "smtp"`) {
		t.Errorf("bad protocol: %q", errOut)
	}
	out, _ = cliMust(t, 0, "passcode", "list", "-config", cfg)
	lines := strings.Split(out, "\n")
	if !strings.Contains(lines[0], "PROTOCOLS") || !strings.Contains(out, "imap,submission") {
		t.Errorf("list does not show the scope:\n%s", out)
	}
	for _, l := range lines {
		if strings.Contains(l, "iPhone") && !strings.Contains(l, " all ") {
			t.Errorf("unscoped passcode: %q", l)
		}
	}
}

// lastUseOf writes a last use of alice's app passcode into the database
// file, as a server that has since stopped would have left it.
func lastUseOf(t *testing.T, dir, app string, u auth.LastUse) {
	t.Helper()
	accts, err := auth.LoadAccounts(filepath.Join(dir, "accounts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := auth.OpenLastUse(filepath.Join(dir, "state", auth.LastUseDBName), 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Record(accts.Lookup("alice").Passcode(app).ID(), u)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCLIPasscodeListLastUse(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	cliMust(t, 0, "2fa", "enable", "-config", cfg, "alice")
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "Thunderbird")
	cliMust(t, 0, "passcode", "add", "-config", cfg, "alice", "iPhone")

	out, _ := cliMust(t, 0, "passcode", "list", "-config", cfg)
	if strings.Count(out, "never") != 2 || !strings.Contains(out, "(no server running)") {
		t.Errorf("list before any use:\n%s", out)
	}

	at := time.Date(2026, 11, 25, 8, 30, 0, 0, time.UTC)
	lastUseOf(t, dir, "Thunderbird", auth.LastUse{User: "alice", App: "Thunderbird", Time: at, ClientIP: "192.0.2.7", Protocol: "imap", Client: "Thunderbird 128.3"})
	out, _ = cliMust(t, 0, "passcode", "list", "-config", cfg, "alice")
	for _, want := range []string{"2026-11-25T08:30:00Z", "192.0.2.7", "imap", "Thunderbird 128.3", "Last use: read from " + filepath.Join(dir, "state", auth.LastUseDBName)} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "never") != 1 {
		t.Errorf("iPhone should be never used:\n%s", out)
	}

	// A running server answers instead of the file.
	srv, err := admin.Listen(filepath.Join(dir, "state"), admin.Handlers{
		LastUse: func() (map[string]auth.LastUse, error) {
			return map[string]auth.LastUse{}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ = cliMust(t, 0, "passcode", "list", "-config", cfg)
	if !strings.Contains(out, "Last use: from the running server.") || strings.Count(out, "never") != 2 {
		t.Errorf("list with a server:\n%s", out)
	}
	srv.Close()

	// A server that cannot say: the list still works, and says so.
	srv, err = admin.Listen(filepath.Join(dir, "state"), admin.Handlers{
		LastUse: func() (map[string]auth.LastUse, error) { return nil, errors.New("disk on fire") },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, _ = cliMust(t, 0, "passcode", "list", "-config", cfg)
	if !strings.Contains(out, "Last use unavailable: the running server: disk on fire") || !strings.Contains(out, "iPhone") {
		t.Errorf("list with a failing server:\n%s", out)
	}
}

func TestCLISessions(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	_, errOut := cliMust(t, 1, "sessions", "-config", cfg)
	if !strings.Contains(errOut, "no running kanmon server") {
		t.Errorf("sessions without a server: %q", errOut)
	}
	since := time.Now().Add(-90 * time.Second)
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	srv, err := admin.Listen(filepath.Join(dir, "state"), admin.Handlers{
		Sessions: func() ([]admin.Session, error) {
			return []admin.Session{
				{User: "alice", Protocol: "imap", ClientIP: "192.0.2.7", Method: "passcode", App: "Thunderbird", Client: "Thunderbird 128.3", Since: since, BytesIn: 1234, BytesOut: 56789},
				{User: "carol", Protocol: "pop3", ClientIP: "10.0.0.9", Method: "passthrough", Since: since},
			}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, _ := cliMust(t, 0, "sessions", "-config", cfg)
	for _, want := range []string{"NODE", "USER", "PROTOCOL", "BYTES IN", "alice", "imap", "192.0.2.7", "passcode Thunderbird", "1234", "56789", "(1m3", "carol", "passthrough", "2 live session(s)."} {
		if !strings.Contains(out, want) {
			t.Errorf("sessions lacks %q:\n%s", want, out)
		}
	}
	// One node without [redis]: the node column says "-".
	for _, l := range strings.Split(out, "\n")[1:3] {
		if !strings.HasPrefix(l, "-  ") {
			t.Errorf("a session line without the node column %q:\n%s", "-", out)
		}
	}
	out, _ = cliMust(t, 0, "sessions", "-config", cfg, "CAROL")
	if strings.Contains(out, "alice") || !strings.Contains(out, "1 live session(s).") {
		t.Errorf("sessions CAROL:\n%s", out)
	}
	out, _ = cliMust(t, 0, "sessions", "-config", cfg, "bob")
	if out != "No live sessions.\n" {
		t.Errorf("sessions bob: %q", out)
	}
}

func TestCLISessionsOfNodes(t *testing.T) {
	dir, cfg := accountsTestDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Minute)
	var partial error
	srv, err := admin.Listen(filepath.Join(dir, "state"), admin.Handlers{
		Sessions: func() ([]admin.Session, error) {
			return []admin.Session{
				{Node: "mx1", User: "alice", Protocol: "imap", ClientIP: "192.0.2.7", Method: "passcode", App: "Thunderbird", Since: since},
				{Node: "mx2", User: "carol", Protocol: "pop3", ClientIP: "10.0.0.9", Method: "passthrough", Since: since},
			}, partial
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, errOut := cliMust(t, 0, "sessions", "-config", cfg)
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "NODE  USER") || !strings.HasPrefix(lines[1], "mx1   alice") || !strings.HasPrefix(lines[2], "mx2   carol") || errOut != "" {
		t.Errorf("sessions of two nodes:\n%s%s", out, errOut)
	}
	out, _ = cliMust(t, 0, "sessions", "-config", cfg, "carol")
	if strings.Contains(out, "alice") || !strings.Contains(out, "mx2") {
		t.Errorf("sessions carol:\n%s", out)
	}

	// Redis down: the node's own list, and a warning on stderr.
	partial = &admin.PartialError{Err: errors.New("only this node's (mx1) sessions")}
	out, errOut = cliMust(t, 0, "sessions", "-config", cfg)
	if !strings.Contains(out, "2 live session(s).") || errOut != "kanmon sessions: warning: only this node's (mx1) sessions\n" {
		t.Errorf("partial answer:\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
}
