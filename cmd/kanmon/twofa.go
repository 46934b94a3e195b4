package main

import (
	"fmt"
	"io"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

const twoFAUsage = `usage:
  kanmon 2fa enable  -config FILE USER   turn two-factor authentication on
  kanmon 2fa disable -config FILE USER   admin reset: 2FA off, all passcodes removed
`

// runTwoFA implements "kanmon 2fa enable|disable".
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
	return auth.EnableTwoFA(auth.OpenStore(cfg.Accounts), user)
}

func cmdTwoFADisable(cfg *config.Config, cfgPath, user string, stdout io.Writer) error {
	name, removed, err := auth.DisableTwoFA(auth.OpenStore(cfg.Accounts), user)
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
