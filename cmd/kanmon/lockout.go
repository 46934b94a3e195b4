package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/kanmon-mail/kanmon/admin"
	"github.com/kanmon-mail/kanmon/config"
)

const lockoutUsage = `usage:
  kanmon lockout list  -config FILE                  list the locks in force
  kanmon lockout clear -config FILE USER|IP|PREFIX   lift the locks and counters of a user, an address or a prefix
Both ask the running server over its admin socket in state_dir.
`

// runLockout implements "kanmon lockout list|clear".
func runLockout(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, lockoutUsage)
		return 2
	}
	switch args[0] {
	case "list":
		return adminCommand("lockout list", "", 0, 0, args[1:], stderr,
			func(cfg *config.Config, _ string, _ []string) error {
				lines, err := admin.NewClient(cfg.StateDir).LockoutList()
				if err != nil {
					return err
				}
				if len(lines) == 0 {
					fmt.Fprintln(stdout, "No locks in force.")
					return nil
				}
				fmt.Fprintln(stdout, strings.Join(lines, "\n"))
				return nil
			})
	case "clear":
		return adminCommand("lockout clear", "USER|IP|PREFIX", 1, 1, args[1:], stderr,
			func(cfg *config.Config, _ string, pos []string) error {
				target := pos[0]
				if _, errIP := netip.ParseAddr(target); errIP != nil {
					if _, errPrefix := netip.ParsePrefix(target); errPrefix != nil {
						target = canonicalUser(cfg, target)
					}
				}
				n, err := admin.NewClient(cfg.StateDir).LockoutClear(target)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "Cleared %d lockout entries for %s.\n", n, target)
				return nil
			})
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, lockoutUsage)
		return 0
	}
	fmt.Fprintf(stderr, "kanmon lockout: unknown command %q\n\n%s", args[0], lockoutUsage)
	return 2
}
