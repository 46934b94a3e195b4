package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

// runCheck implements "kanmon check": it validates the config and the
// accounts file without touching the pepper, the TOTP key or the network;
// it warns when either key file is missing while the accounts need it.
func runCheck(args []string, stdout, stderr io.Writer) int {
	return adminCommand("check", "", 0, 0, args, stderr, func(cfg *config.Config, _ string, _ []string) error {
		accts, err := auth.LoadAccounts(cfg.Accounts)
		if err != nil {
			return err
		}
		n := accts.NumPasscodes()
		if _, err := os.Stat(auth.PepperPath(cfg.StateDir)); n > 0 && errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "warning: %s is missing: the %d existing passcodes cannot match until it is restored\n",
				auth.PepperPath(cfg.StateDir), n)
		}
		enrolled := 0
		for i := range accts.Accounts {
			if accts.Accounts[i].HasTOTP() {
				enrolled++
			}
		}
		if _, err := os.Stat(auth.TOTPKeyPath(cfg.StateDir)); enrolled > 0 && errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "warning: %s is missing: the %d registered authenticators cannot be checked until it is restored\n",
				auth.TOTPKeyPath(cfg.StateDir), enrolled)
		}
		fmt.Fprintf(stdout, "ok: %d listeners, %d 2FA accounts, %d passcodes\n", len(cfg.Listeners), len(accts.Accounts), n)
		return nil
	})
}
