package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/memimap"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/proxy"
)

// Demo account names. The demo user has 2FA on; its account password is
// refused by kanmon, its app passcode works.
const (
	demoUser   = "demo"
	demoApp    = "Thunderbird"
	demoMaster = "kanmon"
	// demoGuest has no 2FA: it signs in to the portal with its password
	// and can turn 2FA on there.
	demoGuest = "guest"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	imapsPort := fs.Int("imaps-port", 19933, "implicit-TLS IMAP `port` on 127.0.0.1 (0: any free port)")
	imapPort := fs.Int("imap-port", 19143, "STARTTLS IMAP `port` on 127.0.0.1 (0: any free port)")
	portalPort := fs.Int("portal-port", 19443, "self-service portal (HTTPS) `port` on 127.0.0.1 (0: any free port)")
	verbose := fs.Bool("v", false, "log every session")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := demo(ctx, demoPorts{*imapsPort, *imapPort, *portalPort}, *verbose, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "kanmon demo:", err)
		return 1
	}
	return 0
}

// demoPorts are the demo's ports on 127.0.0.1; 0 picks a free one.
type demoPorts struct{ imaps, imap, portal int }

// demo sets up a throwaway world in a temp dir: an in-process IMAP server
// with a mailbox, a self-signed certificate, a config, a 2FA account with a
// passcode, an account without 2FA for the self-service portal; then
// serves until ctx ends.
func demo(ctx context.Context, ports demoPorts, verbose bool, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "kanmon-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	masterPW, userPW, guestPW := rand.Text(), rand.Text(), rand.Text()
	backend := memimap.New(demoMaster, masterPW)
	defer backend.Close()
	if err := backend.AddUser(demoUser, userPW); err != nil {
		return err
	}
	if err := backend.AddUser(demoGuest, guestPW); err != nil {
		return err
	}
	for i, subject := range []string{"Welcome to kanmon", "Your app passcode works", "関門: the checkpoint"} {
		msg := fmt.Sprintf("From: kanmon demo <demo@example.edu>\r\nTo: demo@example.edu\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo-%d@kanmon.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis message lives in the demo backend; you are reading it through kanmon.\r\n",
			subject, time.Now().Add(time.Duration(i-3)*time.Hour).Format(time.RFC1123Z), i+1)
		if err := backend.Deliver(demoUser, []byte(msg)); err != nil {
			return err
		}
	}
	backendAddr, err := backend.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}

	cert, err := selfsigned.New("localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	if _, _, err := cert.WriteFiles(dir, "cert.pem", "key.pem"); err != nil {
		return err
	}
	imapsAddr, err := freeAddr(ports.imaps)
	if err != nil {
		return err
	}
	imapAddr, err := freeAddr(ports.imap)
	if err != nil {
		return err
	}
	portalAddr, err := freeAddr(ports.portal)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "kanmon.toml")
	cfgText := fmt.Sprintf(`state_dir = "state"
accounts  = "accounts.toml"
trusted_networks = ["127.0.0.1/32"]
require_2fa_outside = true
log_level = %q

[tls]
cert = "cert.pem"
key  = "key.pem"

[portal]
address = %q
issuer  = "kanmon demo"
mail_host = "127.0.0.1"

[[listener]]
protocol = "imap"
address  = %q
tls      = "implicit"

[[listener]]
protocol = "imap"
address  = %q
tls      = "starttls"

[backend.imap]
address = %q
tls = "none"
master_user = %q
master_password = %q
`, map[bool]string{true: "info", false: "warn"}[verbose], portalAddr, imapsAddr, imapAddr, backendAddr, demoMaster, masterPW)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if _, err := enableTwoFA(cfg, demoUser); err != nil {
		return err
	}
	passcode, err := addPasscode(cfg, demoUser, demoApp)
	if err != nil {
		return err
	}
	grouped := auth.FormatPasscode(passcode)

	return serve(ctx, cfgPath, stderr, func(*proxy.Server) {
		fmt.Fprintf(stdout, `kanmon demo is running. Press Ctrl-C to stop.

  user:           %[1]s          (two-factor authentication on)
  app passcode:   %[2]s   (for %[3]s; spaces and case do not matter)

Try it with curl (the demo certificate is self-signed, hence --insecure):

  curl --insecure --user '%[1]s:%[2]s' 'imaps://%[4]s/INBOX;UID=1'
  curl --insecure --ssl-reqd --user '%[1]s:%[2]s' 'imap://%[5]s/INBOX' -X 'FETCH 1:* ENVELOPE'

The account password is refused, as it is for every account with 2FA:

  curl --insecure --user '%[1]s:%[6]s' 'imaps://%[4]s/INBOX'

Thunderbird (Account Settings > Add Mail Account > Configure manually):
  Incoming: IMAP, server 127.0.0.1, port %[7]s, Connection security SSL/TLS,
            Authentication method Normal password, username %[1]s
  Password: the app passcode above (accept the self-signed certificate)
  (or port %[8]s with STARTTLS)

The self-service portal (turn on 2FA with an authenticator app, make your
own app passcodes) is at https://%[9]s/ (accept the certificate there too).
Sign in as %[10]s, an account without 2FA, with the password %[11]s

`, demoUser, grouped, demoApp, imapsAddr, imapAddr, userPW, portOf(imapsAddr), portOf(imapAddr), portalAddr, demoGuest, guestPW)
	})
}

// freeAddr returns 127.0.0.1:port, or a free port when port is 0.
func freeAddr(port int) (string, error) {
	if port != 0 {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
