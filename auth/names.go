package auth

import (
	"fmt"
	"os"
	"strings"

	"github.com/kanmon-mail/kanmon/username"
)

// UnderNames returns a copy of a whose account names are canonical under
// names ([users]), so that the policy, the lockout and the portal key
// every account on the one name its spellings fold to. It refuses a file
// with a name that names refuses, or with two accounts that fold to one;
// the error gives their lines in file when file can be read.
func (a *Accounts) UnderNames(names *username.Policy, file string) (*Accounts, error) {
	out := &Accounts{Accounts: make([]Account, len(a.Accounts))}
	seen := map[string]int{} // canonical folded name -> index
	var problems []string
	var lines *lineIndex
	where := func(i int) string {
		if lines == nil {
			data, _ := os.ReadFile(file)
			lines = indexLines(data)
		}
		return lines.where(i, -1, a.Accounts[i].User)
	}
	for i, acct := range a.Accounts {
		out.Accounts[i] = acct
		c, err := names.Canonical(acct.User)
		if err != nil {
			problems = append(problems, fmt.Sprintf("account %q (%s): %v", acct.User, where(i), err))
			continue
		}
		key := foldKey(c)
		if j, dup := seen[key]; dup {
			problems = append(problems, fmt.Sprintf("accounts %q (%s) and %q (%s) are one account, %q, under [users]; merge them",
				a.Accounts[j].User, where(j), acct.User, where(i), c))
			continue
		}
		seen[key] = i
		out.Accounts[i].User = c
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %s", file, strings.Join(problems, "; "))
	}
	return out, nil
}
