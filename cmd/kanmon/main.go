// Command kanmon is an authenticating IMAP/POP3/SMTP-submission proxy that
// admits accounts with two-factor authentication only by app passcodes.
//
// Subcommands:
//
//	kanmon serve  -config FILE            # SIGHUP reloads, SIGTERM drains and exits
//	kanmon check  -config FILE            # validate config + accounts
//	kanmon demo                           # embedded backend, self-signed TLS, demo user
//	kanmon passcode add    -config FILE [-protocols LIST] USER APP
//	kanmon passcode list   -config FILE [USER]
//	kanmon passcode revoke -config FILE USER APP
//	kanmon 2fa enable      -config FILE USER
//	kanmon 2fa disable     -config FILE USER
//	kanmon 2fa status      -config FILE USER
//	kanmon reload          -config FILE
//	kanmon sessions        -config FILE [USER]
//	kanmon lockout list    -config FILE
//	kanmon lockout clear   -config FILE USER|IP|PREFIX
//	kanmon accounts import -config FILE ACCOUNTS.toml
//	kanmon accounts export -config FILE
//	kanmon version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: kanmon COMMAND [flags]

commands:
  serve  -config FILE                     run the proxy (SIGHUP reloads, SIGTERM exits)
  check  -config FILE                     validate config and accounts; exit 1 on error
  demo                                    run a self-contained demo on local ports
  passcode add    -config FILE USER APP   create an app passcode; printed once
                  [-protocols imap,pop3,submission]   only for these protocols
  passcode list   -config FILE [USER]     list passcodes (never the secrets) and their last use
  passcode revoke -config FILE USER APP   delete a passcode (then reload)
  2fa enable      -config FILE USER       turn two-factor authentication on
  2fa disable     -config FILE USER       admin reset: 2FA off, all passcodes removed
  2fa status      -config FILE USER       2FA, authenticator, one-time codes left, passcodes
  reload          -config FILE            make the running server re-read its files
                                          (and close sessions whose credential was revoked)
  sessions        -config FILE [USER]     list the live sessions (asks the running server)
  lockout list    -config FILE            list the locks in force (asks the running server)
  lockout clear   -config FILE USER|IP|PREFIX   lift locks and counters
  accounts import -config FILE ACCOUNTS.toml   copy an accounts file into the accounts database
  accounts export -config FILE            write the accounts as an accounts file
  version                                 print the version, commit and Go version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "check":
		return runCheck(rest, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "passcode":
		return runPasscode(rest, stdout, stderr)
	case "2fa":
		return runTwoFA(rest, stdout, stderr)
	case "reload":
		return runReload(rest, stdout, stderr)
	case "sessions":
		return runSessions(rest, stdout, stderr)
	case "lockout":
		return runLockout(rest, stdout, stderr)
	case "accounts":
		return runAccounts(rest, stdout, stderr)
	case "version":
		return runVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "kanmon: unknown command %q\n\n%s", cmd, usage)
	return 2
}
