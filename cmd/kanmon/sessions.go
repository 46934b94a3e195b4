package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kanmon-mail/kanmon/admin"
	"github.com/kanmon-mail/kanmon/config"
)

// runSessions implements "kanmon sessions -config FILE [USER]": the live
// authenticated sessions of the running server, asked over its admin
// socket; with [redis], those of every live node. When the list is
// incomplete (Redis does not answer), the server's warning goes to
// stderr and the list it has to stdout.
func runSessions(args []string, stdout, stderr io.Writer) int {
	return adminCommand("sessions", "[USER]", 0, 1, args, stderr,
		func(cfg *config.Config, _ string, pos []string) error {
			list, warning, err := admin.NewClient(cfg.StateDir).SessionsWithWarning()
			if err != nil {
				return err
			}
			if warning != "" {
				fmt.Fprintln(stderr, "kanmon sessions: warning:", warning)
			}
			if len(pos) == 1 {
				var mine []admin.Session
				user := canonicalUser(cfg, pos[0])
				for _, s := range list {
					if strings.EqualFold(s.User, user) {
						mine = append(mine, s)
					}
				}
				list = mine
			}
			writeSessions(stdout, list, time.Now())
			return nil
		})
}

// writeSessions prints one line per session: the node that holds it ("-"
// on a single node without [redis]), user, protocol, client address, how
// it authenticated, since when, and the bytes each way.
func writeSessions(w io.Writer, list []admin.Session, now time.Time) {
	if len(list) == 0 {
		fmt.Fprintln(w, "No live sessions.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tUSER\tPROTOCOL\tCLIENT IP\tVIA\tSINCE\tBYTES IN\tBYTES OUT\tCLIENT")
	for _, s := range list {
		via := s.Method
		if s.App != "" {
			via += " " + s.App
		}
		since := fmt.Sprintf("%s (%s)", s.Since.UTC().Format(time.RFC3339), now.Sub(s.Since).Round(time.Second))
		node := s.Node
		if node == "" {
			node = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", node, s.User, s.Protocol, s.ClientIP, via, since, s.BytesIn, s.BytesOut, s.Client)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d live session(s).\n", len(list))
}
