package e2e

// Your devices (issue 16), in a real browser against `kanmon serve` in
// front of the real Dovecot: the apps that still send the account
// password, and several authenticators. oathtool stands in for the phone
// apps.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kanmon-mail/kanmon/auth"
)

// imapWithID logs in through kanmon's IMAP listener after sending ID with
// the client's name and version, as Thunderbird does, and returns the
// tagged reply of LOGIN.
func (p *portalServer) imapWithID(t *testing.T, name, version, user, secret string) string {
	t.Helper()
	s := &revokeIdle{dialLine(t, p.IMAPS, p.ClientTLS)}
	defer s.conn.Close()
	s.expect("* OK ")
	if r := s.command(fmt.Sprintf(`i1 ID ("name" %q "version" %q)`, name, version)); !strings.HasPrefix(r, "OK") {
		t.Fatalf("ID: %s", r)
	}
	r := s.command("i2 LOGIN " + user + " " + secret)
	if strings.HasPrefix(r, "OK") {
		s.command("i3 LOGOUT")
	}
	return r
}

// kanmon runs the admin CLI with the server's config and returns its
// output.
func (p *portalServer) kanmon(t *testing.T, args ...string) string {
	t.Helper()
	full := append([]string{args[0]}, append([]string{"-config", p.ConfigPath}, args[1:]...)...)
	if args[0] == "2fa" {
		full = append([]string{"2fa", args[1], "-config", p.ConfigPath}, args[2:]...)
	}
	out, err := exec.Command(p.bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("kanmon %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestE2EPortalDevices is the journey: an app that signed in with
// alice's password shows on the enrollment page; after 2FA is on, a
// Thunderbird still sending the password shows on the account page with
// its count, "Create a passcode for it" makes a "Thunderbird" passcode,
// and once Thunderbird logs in with it the row is gone. kanmon stale
// lists alice alone. A second authenticator is added with a code from the
// first, each signs in, and the first is removed with a code from the
// second. 1,000 made-up clients leave at most 16 rows, and no secret is in
// the store or the log.
func TestE2EPortalDevices(t *testing.T) {
	requireChromium(t)
	oathtool := requireTool(t, "apt-get install oathtool; scripts/test-deps.sh does it", "oathtool")
	p := startPortalServer(t, nil)
	b := startBrowser(t, "https://"+p.PortalAddr, p.CertPEM)
	t.Logf("screenshots in %s", b.shots)

	// Before 2FA, alice's phone and bob's laptop read mail with their
	// passwords (passthrough, from the trusted network).
	if r := p.imapWithID(t, "iPhone Mail", "17.1", "alice", alicePassword); !strings.HasPrefix(r, "OK") {
		t.Fatalf("alice's password before 2FA: %s", r)
	}
	if r := p.imapWithID(t, "Thunderbird", "128.0", "bob", bobPassword); !strings.HasPrefix(r, "OK") {
		t.Fatalf("bob's password: %s", r)
	}

	// The enrollment page lists alice's phone: it will need a passcode.
	b.signIn("alice", alicePassword, "")
	b.onAccount(false)
	b.press("#start-2fa")
	row := `#password-clients li.password-client[data-client="iPhone Mail 17.1"]`
	if !b.has(row) {
		t.Fatalf("the enrollment page does not list the app that used the password:\n%s", b.text("body"))
	}
	if text := b.text(row); !strings.Contains(text, "IMAP") || !strings.Contains(text, "127.0.0.1") || !strings.Contains(text, "signed in with your password once") {
		t.Errorf("enrollment page row: %q", text)
	}
	if body := b.text("body"); !strings.Contains(body, "each of these will need an app passcode") {
		t.Errorf("the enrollment page does not say the apps will need passcodes:\n%s", body)
	}
	b.screenshot("devices-1-enroll")
	firstKey := b.text("#totp-key")
	b.fill("#enroll-name", "iPhone")
	addStep := currentStep()
	b.fill("#enroll-code", totpCode(t, oathtool, firstKey, addStep))
	b.press("#enroll")
	if n := b.count("li.one-time-code"); n != 10 {
		t.Fatalf("%d one-time codes after enrolling", n)
	}
	b.press("#done")
	b.onAccount(true)

	// A Thunderbird that still has the old password, three times.
	for range 3 {
		if r := p.imapWithID(t, "Thunderbird", "115.0", "alice", alicePassword); r != failedReply {
			t.Fatalf("the account password under 2FA: %q, want %q", r, failedReply)
		}
	}
	b.open("/account")
	tb := `#password-clients li.password-client[data-client="Thunderbird 115.0"]`
	if !b.has(tb) {
		t.Fatalf("the account page does not list Thunderbird:\n%s", b.text("body"))
	}
	if got := b.attr(tb, "data-count"); got != "3" {
		t.Errorf("Thunderbird's count %s, want 3", got)
	}
	want := "Thunderbird 115.0 (IMAP) from 127.0.0.1 has tried your account password 3 times since"
	if text := b.text(tb); !strings.Contains(text, want) {
		t.Errorf("Thunderbird's row %q, want it to say %q", text, want)
	}
	b.screenshot("devices-2-password-clients")
	b.open("/account?lang=ja")
	b.screenshot("devices-2-password-clients-ja")
	b.open("/account?lang=en")

	// kanmon stale: alice, and nobody else (bob's passwords are fine:
	// he has no 2FA).
	stale := p.kanmon(t, "stale", "-since", "24h")
	if !strings.Contains(stale, "alice") || strings.Contains(stale, "bob") {
		t.Errorf("kanmon stale, want alice alone:\n%s", stale)
	}
	t.Logf("kanmon stale:\n%s", stale)
	clients := p.kanmon(t, "clients", "alice")
	if !strings.Contains(clients, "Thunderbird 115.0") || !strings.Contains(clients, "iPhone Mail 17.1") {
		t.Errorf("kanmon clients alice lacks Thunderbird or the phone:\n%s", clients)
	}

	// "Create a passcode for it": a passcode named Thunderbird.
	b.press(tb + " .create-for-client")
	grouped := b.text("#passcode")
	if !groupedPasscodeRE.MatchString(grouped) {
		t.Fatalf("#passcode = %q on %s", grouped, b.location())
	}
	if heading := b.text("h1"); !strings.Contains(heading+b.text("body"), "Thunderbird") {
		t.Errorf("the new passcode is not named Thunderbird: %q", heading)
	}
	passcode := strings.ReplaceAll(grouped, " ", "")
	b.press("#done")
	if !b.has(`#passcodes tr[data-app="Thunderbird"]`) {
		t.Fatal("no passcode named Thunderbird in the list")
	}
	// Thunderbird logs in with it: the row is gone.
	if r := p.imapWithID(t, "Thunderbird", "115.0", "alice", passcode); !strings.HasPrefix(r, "OK") {
		t.Fatalf("Thunderbird with its passcode: %s", r)
	}
	b.open("/account")
	if b.has(tb) {
		t.Errorf("Thunderbird is still listed after logging in with its passcode")
	}

	// A second authenticator, added with a code from the first.
	addStep++
	waitForStep(t, addStep)
	b.fill("#authenticator-name", "Authy desktop")
	b.fill("#authenticator-code", totpCode(t, oathtool, firstKey, currentStep()))
	addStep = currentStep()
	b.press("#add-authenticator")
	if !b.has("#enroll-adding") {
		t.Fatalf("adding an authenticator: want the enrollment page, got %s\n%s", b.location(), b.text("body"))
	}
	secondKey := b.text("#totp-key")
	if secondKey == firstKey || !groupedKeyRE.MatchString(secondKey) {
		t.Fatalf("the second key %q", secondKey)
	}
	b.screenshot("devices-3-add-authenticator")
	b.fill("#enroll-code", totpCode(t, oathtool, secondKey, currentStep()))
	b.press("#enroll")
	b.onAccount(true)
	if n := b.count("#authenticators tr[data-name]"); n != 2 {
		t.Fatalf("%d authenticators listed, want 2:\n%s", n, b.text("body"))
	}
	b.screenshot("devices-4-two-authenticators")
	status := p.kanmon(t, "2fa", "status", "alice")
	if !strings.Contains(status, "iPhone") || !strings.Contains(status, "Authy desktop") || !strings.Contains(status, "authenticators (TOTP): 2 of at most 5") {
		t.Errorf("kanmon 2fa status with two authenticators:\n%s", status)
	}

	// A code from each signs in (a later step each: the replay guard is
	// per account).
	b.signOut()
	waitForStep(t, addStep+1)
	b.signIn("alice", alicePassword, totpCode(t, oathtool, secondKey, currentStep()))
	b.onAccount(true)
	signedStep := currentStep()
	b.signOut()
	waitForStep(t, signedStep+1)
	b.signIn("alice", alicePassword, totpCode(t, oathtool, firstKey, currentStep()))
	b.onAccount(true)
	signedStep = currentStep()
	if text := b.text(`#authenticators tr[data-name="Authy desktop"]`); strings.Contains(text, "Never") {
		t.Errorf("the second authenticator's last use is not shown: %q", text)
	}

	// The first cannot be removed with its own code; with the second's
	// it is.
	waitForStep(t, signedStep+1)
	first := `#authenticators tr[data-name="iPhone"]`
	b.fill(first+" .remove-code", totpCode(t, oathtool, firstKey, currentStep()))
	b.press(first + " .remove-authenticator")
	if !b.has("#error") || !b.has(first) {
		t.Fatalf("removing the first with its own code: want an error and the row kept")
	}
	waitForStep(t, currentStep()+1) // the wrong attempt did not claim the step, but be plain
	b.fill(first+" .remove-code", totpCode(t, oathtool, secondKey, currentStep()))
	b.press(first + " .remove-authenticator")
	b.onAccount(true)
	if b.has(first) || b.count("#authenticators tr[data-name]") != 1 {
		t.Fatalf("after removing the first: %s", b.text("#authenticators"))
	}
	b.screenshot("devices-5-one-authenticator")
	if status := p.kanmon(t, "2fa", "status", "alice"); strings.Contains(status, "iPhone") || !strings.Contains(status, "Authy desktop") {
		t.Errorf("kanmon 2fa status after removing the first:\n%s", status)
	}

	// 1,000 made-up clients send alice's password: at most 16 rows.
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if r := p.imapWithID(t, fmt.Sprintf("Fake Client %d", i), "1.0", "alice", alicePassword); r != failedReply {
					t.Errorf("fake client %d: %q", i, r)
				}
			}
		}()
	}
	for i := range 1000 {
		work <- i
	}
	close(work)
	wg.Wait()
	b.open("/account")
	if n := b.count("#password-clients li.password-client"); n == 0 || n > auth.MaxClientsPerAccount {
		t.Errorf("%d rows after 1,000 clients, want 1 to %d", n, auth.MaxClientsPerAccount)
	}
	lines := strings.Count(p.kanmon(t, "clients", "alice"), "Fake Client")
	if lines == 0 || lines > auth.MaxClientsPerAccount {
		t.Errorf("kanmon clients lists %d made-up clients, want 1 to %d", lines, auth.MaxClientsPerAccount)
	}

	p.stop(t)
	store, err := os.ReadFile(filepath.Join(p.Dir, "state", auth.LastUseDBName))
	if err != nil {
		t.Fatalf("the last-use database: %v", err)
	}
	if !strings.Contains(string(store), "Fake Client") {
		t.Fatal("the last-use database does not hold the clients: wrong file?")
	}
	secrets := []string{alicePassword, bobPassword, passcode, grouped, strings.ReplaceAll(firstKey, " ", ""), strings.ReplaceAll(secondKey, " ", "")}
	for _, s := range secrets {
		if strings.Contains(string(store), s) {
			t.Errorf("the last-use database holds a secret (%d characters)", len(s))
		}
		if strings.Contains(p.log.String(), s) {
			t.Errorf("the serve log holds a secret (%d characters)", len(s))
		}
	}
}
