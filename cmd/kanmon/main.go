// Command kanmon is an authenticating IMAP/POP3/SMTP-submission proxy that
// admits accounts with two-factor authentication only by app passcodes.
//
// `kanmon help` lists the commands, and the man page kanmon(8)
// (docs/kanmon.8) describes them; both come from the list in
// commands.go.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
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
	case "clients":
		return runClients(rest, stdout, stderr)
	case "stale":
		return runStale(rest, stdout, stderr)
	case "lockout":
		return runLockout(rest, stdout, stderr)
	case "accounts":
		return runAccounts(rest, stdout, stderr)
	case "version":
		return runVersion(rest, stdout, stderr)
	case "man": // hidden: writes kanmon(8)
		return runMan(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "kanmon: unknown command %q\n\n", cmd)
	usage(stderr)
	return 2
}
