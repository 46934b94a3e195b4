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
	dc := dovecottest.Start(t, dovecottest.Options{
		Users: []dovecottest.User{
			{Name: "alice", Password: alicePassword},
			{Name: "bob", Password: bobPassword},
			{Name: "carol", Password: carolPassword},
		},
		MasterUser:     masterUser,
		MasterPassword: masterPassword,
	})
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
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecot log:\n%s", dc.Log())
		}
	})
	return &world{dovecot: dc, kanmon: k}
}

// requireCurl returns the path of curl, or skips (fails under CI=true).
func requireCurl(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is required under CI=true (apt-get install curl)")
		}
		t.Skip("curl not installed (apt-get install curl); skipping the curl client test")
	}
	return path
}

// curlResult is what a curl run printed and how it ended.
type curlResult struct {
	stdout, stderr string
	exitCode       int
}

// runCurl runs curl with a time limit and kanmon's CA trusted.
func runCurl(t *testing.T, k *kanmontest.Kanmon, args ...string) curlResult {
	t.Helper()
	curl := requireCurl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"--silent", "--show-error", "--max-time", "20", "--cacert", filepath.Join(k.Dir, "cert.pem")}, args...)
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
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
