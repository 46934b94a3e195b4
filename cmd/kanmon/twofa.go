package main

import (
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/kanmon-mail/kanmon/accountsdb"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

const twoFAUsage = `usage:
  kanmon 2fa enable  -config FILE USER   turn two-factor authentication on
  kanmon 2fa disable -config FILE USER   admin reset: 2FA off, all passcodes removed
                                         (also the authenticator and one-time codes)
  kanmon 2fa status  -config FILE USER   show 2FA, the authenticators, one-time codes
                                         left and the passcodes (never a secret)
  kanmon 2fa remove-authenticator -config FILE USER NAME
                                         remove one of several authenticators
`

// runTwoFA implements "kanmon 2fa enable|disable|status".
func runTwoFA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, twoFAUsage)
		return 2
	}
	switch args[0] {
	case "enable":
		return adminCommand("2fa enable", "USER", 1, 1, args[1:], stderr,
			func(cfg *config.Config, cfgPath string, pos []string) error {
				return cmdTwoFAEnable(cfg, cfgPath, pos[0], stdout)
			})
	case "disable":
		return adminCommand("2fa disable", "USER", 1, 1, args[1:], stderr,
			func(cfg *config.Config, cfgPath string, pos []string) error {
				return cmdTwoFADisable(cfg, cfgPath, pos[0], stdout)
			})
	case "status":
		return adminCommand("2fa status", "USER", 1, 1, args[1:], stderr,
			func(cfg *config.Config, _ string, pos []string) error {
				return cmdTwoFAStatus(cfg, pos[0], stdout)
			})
	case "remove-authenticator":
		return adminCommand("2fa remove-authenticator", "USER NAME", 2, 2, args[1:], stderr,
			func(cfg *config.Config, cfgPath string, pos []string) error {
				removed, err := auth.RemoveAuthenticator(accountsStore(cfg), pos[0], pos[1])
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "Removed the authenticator %s of %s; its codes no longer work.\n%s\n", removed, canonicalUser(cfg, pos[0]), reloadHint(cfgPath))
				return nil
			})
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, twoFAUsage)
		return 0
	}
	fmt.Fprintf(stderr, "kanmon 2fa: unknown command %q\n\n%s", args[0], twoFAUsage)
	return 2
}

func cmdTwoFAEnable(cfg *config.Config, cfgPath, user string, stdout io.Writer) error {
	added, err := enableTwoFA(cfg, user)
	if err != nil {
		return err
	}
	if !added {
		fmt.Fprintf(stdout, "2FA is already on for %s; nothing changed.\n", user)
		return nil
	}
	fmt.Fprintf(stdout, "2FA is now on for %[1]s. The account password no longer works for IMAP, POP3 or SMTP;\n"+
		"create an app passcode with \"kanmon passcode add -config %[2]s %[1]s APP\".\n%[3]s\n", user, cfgPath, reloadHint(cfgPath))
	return nil
}

// enableTwoFA adds user to the accounts file. added is false if the user
// already had 2FA on.
func enableTwoFA(cfg *config.Config, user string) (added bool, err error) {
	return auth.EnableTwoFA(accountsStore(cfg), user)
}

func cmdTwoFADisable(cfg *config.Config, cfgPath, user string, stdout io.Writer) error {
	name, removed, err := auth.DisableTwoFA(accountsStore(cfg), user)
	if err != nil {
		return err
	}
	where := "from anywhere"
	if *cfg.Require2FAOutside {
		where = "only from trusted_networks"
	}
	fmt.Fprintf(stdout, "2FA is now off for %s; %d app passcode(s) removed.\n%s signs in with the account password, %s.\n%s\n",
		name, removed, name, where, reloadHint(cfgPath))
	return nil
}

// cmdTwoFAStatus prints user's 2FA status: since when it is on, the
// authenticator, the one-time codes left and the passcodes. It shows no
// secret and no hash.
func cmdTwoFAStatus(cfg *config.Config, user string, stdout io.Writer) error {
	st, err := auth.Status(accountsStore(cfg), user)
	if err != nil {
		return err
	}
	if !st.On {
		return fmt.Errorf("%s does not have 2FA on", user)
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	fmt.Fprintf(stdout, "%s: 2FA on since %s\n", st.User, ts(st.Enabled))
	if st.HasTOTP() {
		uses, _ := passcodeLastUse(cfg)
		fmt.Fprintf(stdout, "authenticators (TOTP): %d of at most %d\n", len(st.Authenticators), auth.MaxAuthenticators)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tADDED\tLAST USED\tFROM")
		for _, au := range st.Authenticators {
			last, from := "never", ""
			switch u, ok := uses[au.ID]; {
			case uses == nil:
				last = "?"
			case ok:
				last, from = ts(u.Time), u.ClientIP
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", au.Name, ts(au.Added), last, from)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, "no authenticator: passcodes managed by the admin")
	}
	fmt.Fprintf(stdout, "one-time codes left: %d\n", st.OneTimeCodesLeft)
	if len(st.Passcodes) == 0 {
		fmt.Fprintln(stdout, "passcodes: none")
		return nil
	}
	fmt.Fprintf(stdout, "passcodes: %d\n", len(st.Passcodes))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  APP\tCREATED\tPROTOCOLS")
	for _, pc := range st.Passcodes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", pc.App, ts(pc.Created), auth.FormatProtocols(pc.Protocols))
	}
	return tw.Flush()
}

// accountsStore is cfg's accounts file, keyed on canonical names
// ([users]): any spelling of a user names the one account.
func accountsStore(cfg *config.Config) *auth.Store {
	if cfg.AccountsURL != "" {
		return auth.OpenSharedStore(accountsdb.NewLazy(cfg.AccountsURL, slog.New(slog.DiscardHandler))).WithNames(cfg.Users.Names)
	}
	return auth.OpenStore(cfg.Accounts).WithNames(cfg.Users.Names)
}

// canonicalUser is the account name for name as typed ([users]), or name
// itself when [users] refuses it, for commands that only look a user up.
func canonicalUser(cfg *config.Config, name string) string {
	if c, err := cfg.Users.Names.Canonical(name); err == nil {
		return c
	}
	return name
}
