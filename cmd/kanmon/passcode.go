package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/kanmon-mail/kanmon/admin"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/redisstate"
)

const passcodeUsage = `usage:
  kanmon passcode add    -config FILE [-protocols imap,pop3,submission] USER APP
                                                 create an app passcode; printed once
  kanmon passcode list   -config FILE [USER]     list passcodes (never the secrets),
                                                 their protocols and last use
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
		var protocols []string
		scope := func(fs *flag.FlagSet) {
			fs.Func("protocols", "limit the passcode to these `PROTOCOLS` (comma-separated: imap, pop3, submission; default all)", func(v string) error {
				var err error
				protocols, err = auth.ParseProtocols(v)
				return err
			})
		}
		return adminCommandFlags("passcode add", "USER APP", 2, 2, args[1:], stderr, scope,
			func(cfg *config.Config, cfgPath string, pos []string) error {
				return cmdPasscodeAdd(cfg, cfgPath, pos[0], pos[1], protocols, stdout)
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
	return adminCommandFlags(name, argsUsage, minArgs, maxArgs, args, stderr, nil, fn)
}

// adminCommandFlags is adminCommand for a command with flags of its own,
// which flags (if not nil) defines.
func adminCommandFlags(name, argsUsage string, minArgs, maxArgs int, args []string, stderr io.Writer,
	flags func(*flag.FlagSet), fn func(cfg *config.Config, cfgPath string, pos []string) error) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config `FILE` (required)")
	if flags != nil {
		flags(fs)
	}
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

// cmdPasscodeAdd creates a passcode, limited to protocols when not empty,
// and prints it once.
func cmdPasscodeAdd(cfg *config.Config, cfgPath, user, app string, protocols []string, stdout io.Writer) error {
	code, err := auth.AddScopedPasscode(accountsStore(cfg), cfg.StateDir, user, app, protocols)
	if err != nil {
		return err
	}
	scope := ""
	if len(protocols) > 0 {
		scope = "It works only for " + auth.FormatProtocols(protocols) + ".\n"
	}
	fmt.Fprintf(stdout, "App passcode for %s (%s):\n\n    %s\n\nIt is shown only this once. Spaces and case do not matter.\n%s%s\n",
		user, app, auth.FormatPasscode(code), scope, reloadHint(cfgPath))
	return nil
}

// addPasscode generates a passcode named app for user, who must have 2FA
// on, stores its hash in the accounts file and returns the passcode.
func addPasscode(cfg *config.Config, user, app string) (string, error) {
	return auth.AddPasscode(accountsStore(cfg), cfg.StateDir, user, app)
}

// cmdPasscodeList prints user, app, creation time, protocol scope and last
// use of every passcode, or of one user's. Hashes are never shown. The
// last use comes from the running server, or, when none runs, from its
// database, read directly; a last line says which.
func cmdPasscodeList(cfg *config.Config, pos []string, stdout io.Writer) error {
	accts, err := accountsStore(cfg).Read()
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
	uses, source := passcodeLastUse(cfg)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tAPP\tCREATED\tPROTOCOLS\tLAST USED\tFROM\tVIA\tCLIENT")
	for _, acct := range list {
		if len(acct.Passcodes) == 0 {
			fmt.Fprintf(tw, "%s\t(no passcodes)\t\t\t\t\t\t\n", acct.User)
		}
		for _, pc := range acct.Passcodes {
			last := "never"
			var from, via, client string
			switch u, ok := uses[pc.ID()]; {
			case uses == nil:
				last = "?"
			case ok:
				last, from, via, client = u.Time.UTC().Format(time.RFC3339), u.ClientIP, u.Protocol, u.Client
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", acct.User, pc.App, pc.Created.UTC().Format(time.RFC3339),
				auth.FormatProtocols(pc.Protocols), last, from, via, client)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, source)
	return nil
}

// passcodeLastUse returns the passcodes' last use and a line saying where
// it came from: the running server (over the admin socket), or, when no
// server runs, the database file, read directly. A nil map means it is
// unavailable, and the line says why.
func passcodeLastUse(cfg *config.Config) (map[string]auth.LastUse, string) {
	uses, err := admin.NewClient(cfg.StateDir).LastUse()
	if err == nil {
		return uses, "Last use: from the running server."
	}
	if !errors.Is(err, admin.ErrNotRunning) {
		return nil, fmt.Sprintf("Last use unavailable: the running server: %v", err)
	}
	if cfg.Redis != nil {
		// The nodes keep last use in Redis: read it there.
		return sharedLastUse(cfg)
	}
	path := filepath.Join(cfg.StateDir, auth.LastUseDBName)
	if uses, err = auth.ReadLastUse(path); err != nil {
		return nil, fmt.Sprintf("Last use unavailable (no server running): %v", err)
	}
	return uses, fmt.Sprintf("Last use: read from %s (no server running).", path)
}

// cmdPasscodeRevoke deletes one passcode.
func cmdPasscodeRevoke(cfg *config.Config, cfgPath, user, app string, stdout io.Writer) error {
	owner, revoked, err := auth.RevokePasscode(accountsStore(cfg), user, app)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Revoked the %s passcode of %s.\n%s\n", revoked, owner, reloadHint(cfgPath))
	return nil
}

// sharedLastUse reads the passcodes' last use from the Redis of [redis],
// for passcode list when no server runs on this node.
func sharedLastUse(cfg *config.Config) (map[string]auth.LastUse, string) {
	quiet := slog.New(slog.DiscardHandler)
	c, err := redisstate.Open(cfg.Redis, quiet)
	if err != nil {
		return nil, fmt.Sprintf("Last use unavailable (no server running): %v", err)
	}
	defer c.Close()
	lu := redisstate.NewLastUse(c, quiet)
	defer lu.Close()
	uses, err := lu.All()
	if err != nil {
		return nil, fmt.Sprintf("Last use unavailable (no server running): redis: %v", err)
	}
	return uses, "Last use: read from Redis ([redis]; no server running here)."
}
