package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

const passcodeUsage = `usage:
  kanmon passcode add    -config FILE USER APP   create an app passcode; printed once
  kanmon passcode list   -config FILE [USER]     list passcodes (never the secrets)
  kanmon passcode revoke -config FILE USER APP   delete a passcode (then reload)
`

// runPasscode implements "kanmon passcode add|list|revoke".
func runPasscode(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, passcodeUsage)
		return 2
	}
	switch args[0] {
	case "add":
		return adminCommand("passcode add", "USER APP", 2, 2, args[1:], stderr,
			func(cfg *config.Config, cfgPath string, pos []string) error {
				return cmdPasscodeAdd(cfg, cfgPath, pos[0], pos[1], stdout)
			})
	case "list":
		return adminCommand("passcode list", "[USER]", 0, 1, args[1:], stderr,
			func(cfg *config.Config, _ string, pos []string) error {
				return cmdPasscodeList(cfg, pos, stdout)
			})
	case "revoke":
		return adminCommand("passcode revoke", "USER APP", 2, 2, args[1:], stderr,
			func(cfg *config.Config, cfgPath string, pos []string) error {
				return cmdPasscodeRevoke(cfg, cfgPath, pos[0], pos[1], stdout)
			})
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, passcodeUsage)
		return 0
	}
	fmt.Fprintf(stderr, "kanmon passcode: unknown command %q\n\n%s", args[0], passcodeUsage)
	return 2
}

// adminCommand parses "-config FILE" and between minArgs and maxArgs
// positional arguments (flags may come before, between or after them),
// loads the config and runs fn. It returns the exit code: 0 ok, 1 failure,
// 2 usage.
func adminCommand(name, argsUsage string, minArgs, maxArgs int, args []string, stderr io.Writer,
	fn func(cfg *config.Config, cfgPath string, pos []string) error) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config `FILE` (required)")
	usageLine := "usage: kanmon " + name + " -config FILE"
	if argsUsage != "" {
		usageLine += " " + argsUsage
	}
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), usageLine)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if *cfgPath == "" || len(pos) < minArgs || len(pos) > maxArgs {
		fmt.Fprintln(stderr, usageLine)
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err == nil {
		err = fn(cfg, *cfgPath, pos)
	}
	if err != nil {
		if name == "check" {
			// check's output is "file:line: message", for editors.
			fmt.Fprintln(stderr, err)
		} else {
			fmt.Fprintf(stderr, "kanmon %s: %v\n", name, err)
		}
		return 1
	}
	return 0
}

// parseInterspersed parses fs's flags wherever they appear among the
// positional arguments, which it returns in order. After "--" everything
// is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// reloadHint tells the admin how to make a running server see a change.
func reloadHint(cfgPath string) string {
	return fmt.Sprintf("Run \"kanmon reload -config %s\" if the server is running.", cfgPath)
}

// cmdPasscodeAdd creates a passcode and prints it once.
func cmdPasscodeAdd(cfg *config.Config, cfgPath, user, app string, stdout io.Writer) error {
	code, err := addPasscode(cfg, user, app)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "App passcode for %s (%s):\n\n    %s\n\nIt is shown only this once. Spaces and case do not matter.\n%s\n",
		user, app, auth.FormatPasscode(code), reloadHint(cfgPath))
	return nil
}

// addPasscode generates a passcode named app for user, who must have 2FA
// on, stores its hash in the accounts file and returns the passcode.
func addPasscode(cfg *config.Config, user, app string) (string, error) {
	return auth.AddPasscode(auth.OpenStore(cfg.Accounts), cfg.StateDir, user, app)
}

// cmdPasscodeList prints user, app and creation time of every passcode, or
// of one user's. Hashes are never shown.
func cmdPasscodeList(cfg *config.Config, pos []string, stdout io.Writer) error {
	accts, err := auth.OpenStore(cfg.Accounts).Read()
	if err != nil {
		return err
	}
	list := accts.Accounts
	if len(pos) == 1 {
		acct := accts.Lookup(pos[0])
		if acct == nil {
			return fmt.Errorf("%s does not have 2FA on", pos[0])
		}
		list = []auth.Account{*acct}
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "No account has 2FA on.")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tAPP\tCREATED")
	for _, acct := range list {
		if len(acct.Passcodes) == 0 {
			fmt.Fprintf(tw, "%s\t(no passcodes)\t\n", acct.User)
		}
		for _, pc := range acct.Passcodes {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", acct.User, pc.App, pc.Created.UTC().Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

// cmdPasscodeRevoke deletes one passcode.
func cmdPasscodeRevoke(cfg *config.Config, cfgPath, user, app string, stdout io.Writer) error {
	owner, revoked, err := auth.RevokePasscode(auth.OpenStore(cfg.Accounts), user, app)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Revoked the %s passcode of %s.\n%s\n", revoked, owner, reloadHint(cfgPath))
	return nil
}
