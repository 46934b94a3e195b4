// Package e2e runs kanmon's user stories against a real Dovecot that the
// tests start themselves (internal/dovecottest), with Go clients and with
// curl. Under CI=true a missing Dovecot or curl is a failure, not a skip.
package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// The accounts of the private Dovecot. alice and bob get 2FA in kanmon;
// carol has no 2FA and logs in with her password from trusted networks.
const (
	alicePassword  = "alice-account-pw"
	bobPassword    = "bob-account-pw"
	carolPassword  = "carol-account-pw"
	masterUser     = "kanmon"
	masterPassword = "master-secret-pw"
)

// passwords are the Dovecot accounts' passwords, by user.
var passwords = map[string]string{"alice": alicePassword, "bob": bobPassword, "carol": carolPassword}

// startDovecot starts a private Dovecot with users (of alice, bob and
// carol), the master user, and opts; its log is shown if the test fails.
func startDovecot(t testing.TB, opts dovecottest.Options, users ...string) *dovecottest.Server {
	t.Helper()
	for _, u := range users {
		opts.Users = append(opts.Users, dovecottest.User{Name: u, Password: passwords[u]})
	}
	opts.MasterUser, opts.MasterPassword = masterUser, masterPassword
	dc := dovecottest.Start(t, opts)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecot log:\n%s", dc.Log())
		}
	})
	return dc
}

// world is a Dovecot with kanmon in front of it.
type world struct {
	dovecot *dovecottest.Server
	kanmon  *kanmontest.Kanmon
}

// startWorld starts a Dovecot (IMAP, POP3) and a kanmon in front of it
// with alice and bob on 2FA (passcodes "Thunderbird" and "Cybozu" for
// alice, "Outlook" for bob).
func startWorld(t *testing.T, opts kanmontest.Options) *world {
	t.Helper()
	dc := startDovecot(t, dovecottest.Options{}, "alice", "bob", "carol")
	if opts.IMAPBackend == "" {
		opts.IMAPBackend = dc.IMAPAddr
	}
	if opts.MasterUser == "" {
		opts.MasterUser, opts.MasterPassword = masterUser, masterPassword
	}
	if opts.Passcodes == nil {
		opts.Passcodes = map[string][]string{"alice": {"Thunderbird", "Cybozu"}, "bob": {"Outlook"}}
	}
	k := kanmontest.Start(t, opts)
	return &world{dovecot: dc, kanmon: k}
}

// inCI reports whether this is a CI run, as internal/dovecottest reads
// the environment: then a missing tool fails the test.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// requireTool returns the path of the first of names that exists (a bare
// name is looked up in PATH), or skips the test, failing it under CI, with
// the install hint.
func requireTool(t *testing.T, hint string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if filepath.IsAbs(n) {
			if fi, err := os.Stat(n); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return n
			}
			continue
		}
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if inCI() {
		t.Fatalf("%s not found; it is required under CI=true (%s)", names[0], hint)
	}
	t.Skipf("%s not found (%s); skipping the test", names[0], hint)
	return ""
}

// requireCurl returns the path of curl, or skips (fails under CI).
func requireCurl(t *testing.T) string {
	t.Helper()
	return requireTool(t, "apt-get install curl", "curl")
}

// curlResult is what a curl run printed and how it ended.
type curlResult struct {
	stdout, stderr string
	exitCode       int
}

// runCurl runs curl with a time limit, trusting the certificate in the
// file cacert (kanmon's CertFile).
func runCurl(t *testing.T, cacert string, args ...string) curlResult {
	t.Helper()
	curl := requireCurl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"--silent", "--show-error", "--max-time", "20", "--cacert", cacert}, args...)
	cmd := exec.CommandContext(ctx, curl, all...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := curlResult{stdout: out.String(), stderr: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.exitCode = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("curl: %v", err)
	}
	return res
}

// message builds a small RFC 5322 message.
func message(from, to, subject, body string) []byte {
	return []byte("From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" +
		strings.ReplaceAll(subject, " ", ".") + "@e2e.kanmon>\r\n\r\n" + body + "\r\n")
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
