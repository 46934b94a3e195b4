package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

const accountsUsage = `usage:
  kanmon accounts import -config FILE ACCOUNTS.toml   copy an accounts file into the accounts database
  kanmon accounts export -config FILE                 write the accounts as an accounts file (stdout)
import needs accounts = "postgres://..." in the config. It adds or replaces
each account of the file, in one transaction, keeping its hashes and sealed
secrets as they are; accounts not in the file stay. Running it twice changes
nothing the second time. export works on a file or a database.
`

// runAccounts implements "kanmon accounts import|export".
func runAccounts(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, accountsUsage)
		return 2
	}
	switch args[0] {
	case "import":
		return adminCommand("accounts import", "ACCOUNTS.toml", 1, 1, args[1:], stderr,
			func(cfg *config.Config, _ string, pos []string) error {
				if cfg.AccountsURL == "" {
					return errors.New("accounts import: the config's accounts is a file, not a database (accounts = \"postgres://...\")")
				}
				from, err := auth.LoadAccounts(pos[0])
				if err == nil {
					from, err = from.UnderNames(cfg.Users.Names, pos[0])
				}
				if err != nil {
					return err
				}
				added, replaced, same := 0, 0, 0
				err = accountsStore(cfg).Update(func(a *auth.Accounts) error {
					added, replaced, same = importAccounts(a, from)
					if added+replaced == 0 {
						return auth.ErrNoChange
					}
					return nil
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "Imported %s into %s: %d added, %d replaced, %d unchanged.\n",
					pos[0], accountsStore(cfg).Path(), added, replaced, same)
				return nil
			})
	case "export":
		return adminCommand("accounts export", "", 0, 0, args[1:], stderr,
			func(cfg *config.Config, _ string, _ []string) error {
				a, err := accountsStore(cfg).Read()
				if err != nil {
					return err
				}
				_, err = stdout.Write(a.Encode(""))
				return err
			})
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, accountsUsage)
		return 0
	}
	fmt.Fprintf(stderr, "kanmon accounts: unknown command %q\n\n%s", args[0], accountsUsage)
	return 2
}

// importAccounts puts every account of from into a, replacing an account
// of the same name (matched as Lookup matches) and appending a new one.
func importAccounts(a, from *auth.Accounts) (added, replaced, same int) {
	for _, acct := range from.Accounts {
		have := a.Lookup(acct.User)
		switch {
		case have == nil:
			a.Accounts = append(a.Accounts, acct)
			added++
		case sameExport(have, &acct):
			same++
		default:
			*have = acct
			replaced++
		}
	}
	return added, replaced, same
}

// sameExport reports whether two accounts export to the same text.
func sameExport(a, b *auth.Account) bool {
	x := (&auth.Accounts{Accounts: []auth.Account{*a}}).Encode("")
	y := (&auth.Accounts{Accounts: []auth.Account{*b}}).Encode("")
	return string(x) == string(y)
}
