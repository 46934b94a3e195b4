package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kanmon-mail/kanmon/admin"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/redisstate"
)

// clientRecords is where the CLI reads the password-client records: the
// running server, Redis, or the last-use database file.
type clientRecords interface {
	Clients(kind auth.ClientKind, user string) ([]auth.PasswordClient, error)
	Accounts(kind auth.ClientKind, since time.Time) (map[string][]auth.PasswordClient, error)
}

// adminRecords reads them from the running server over the admin socket.
type adminRecords struct{ c *admin.Client }

func (a adminRecords) Clients(kind auth.ClientKind, user string) ([]auth.PasswordClient, error) {
	return a.c.Clients(kind, user)
}

func (a adminRecords) Accounts(kind auth.ClientKind, since time.Time) (map[string][]auth.PasswordClient, error) {
	return a.c.ClientAccounts(kind, since)
}

// fileRecords reads them from the last-use database while no server runs.
type fileRecords struct{ path string }

func (f fileRecords) Clients(kind auth.ClientKind, user string) ([]auth.PasswordClient, error) {
	return auth.ReadClients(f.path, kind, user)
}

func (f fileRecords) Accounts(kind auth.ClientKind, since time.Time) (map[string][]auth.PasswordClient, error) {
	return auth.ReadClientAccounts(f.path, kind, since)
}

// openClientRecords picks the source, as passcode list does for the last
// use: the running server; else, in a cluster, Redis; else the file. It
// returns a line saying which, and a close function.
func openClientRecords(cfg *config.Config) (clientRecords, string, func(), error) {
	ac := admin.NewClient(cfg.StateDir)
	if _, err := ac.Clients(auth.ClientRefused, "-"); err == nil {
		return adminRecords{ac}, "Records: from the running server.", func() {}, nil
	} else if !errors.Is(err, admin.ErrNotRunning) {
		return nil, "", nil, fmt.Errorf("the running server: %w", err)
	}
	if cfg.Redis != nil {
		quiet := slog.New(slog.DiscardHandler)
		c, err := redisstate.Open(cfg.Redis, quiet)
		if err != nil {
			return nil, "", nil, err
		}
		rc := redisstate.NewClients(c, quiet)
		return rc, "Records: read from Redis ([redis]; no server running here).", func() { _ = rc.Close(); c.Close() }, nil
	}
	path := filepath.Join(cfg.StateDir, auth.LastUseDBName)
	return fileRecords{path}, fmt.Sprintf("Records: read from %s (no server running).", path), func() {}, nil
}

// runClients implements "kanmon clients -config FILE USER".
func runClients(args []string, stdout, stderr io.Writer) int {
	return adminCommand("clients", "USER", 1, 1, args, stderr, func(cfg *config.Config, _ string, pos []string) error {
		return cmdClients(cfg, pos[0], stdout)
	})
}

// cmdClients prints the apps of one account that presented its password:
// refused ones (2FA on) and those that signed in with it (2FA off then).
func cmdClients(cfg *config.Config, user string, stdout io.Writer) error {
	st, err := auth.Status(accountsStore(cfg), user)
	if err != nil {
		return err
	}
	recs, source, done, err := openClientRecords(cfg)
	if err != nil {
		return err
	}
	defer done()
	state := "2FA off"
	if st.On {
		state = "2FA on"
	}
	fmt.Fprintf(stdout, "%s: %s\n", st.User, state)
	for _, kind := range []auth.ClientKind{auth.ClientRefused, auth.ClientPassword} {
		list, err := recs.Clients(kind, st.User)
		if err != nil {
			return err
		}
		title := "Apps refused for presenting the account password (2FA on)"
		if kind == auth.ClientPassword {
			title = "Apps that signed in with the account password (2FA off)"
		}
		fmt.Fprintf(stdout, "\n%s, last %d days:\n", title, int(auth.ClientRetention.Hours()/24))
		if len(list) == 0 {
			fmt.Fprintln(stdout, "  none")
			continue
		}
		if err := printClients(stdout, list); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, "\n"+source)
	return nil
}

// printClients writes a table of records.
func printClients(w io.Writer, list []auth.PasswordClient) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLIENT\tPROTOCOL\tFROM\tCOUNT\tFIRST SEEN\tLAST SEEN")
	for _, c := range list {
		name := c.Label()
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", name, c.Protocol, c.IP, c.Count,
			c.First.UTC().Format(time.RFC3339), c.Last.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// runStale implements "kanmon stale -config FILE [-since DURATION]".
func runStale(args []string, stdout, stderr io.Writer) int {
	since := auth.ClientRetention
	flags := func(fs *flag.FlagSet) {
		fs.DurationVar(&since, "since", auth.ClientRetention, "only apps seen within this `DURATION` (e.g. 24h)")
	}
	return adminCommandFlags("stale", "", 0, 0, args, stderr, flags, func(cfg *config.Config, _ string, _ []string) error {
		return cmdStale(cfg, since, stdout)
	})
}

// cmdStale lists the 2FA accounts with apps still presenting the account
// password, seen within since: the users the helpdesk should call.
func cmdStale(cfg *config.Config, since time.Duration, stdout io.Writer) error {
	if since <= 0 {
		return errors.New("-since must be positive")
	}
	accts, err := accountsStore(cfg).Read()
	if err != nil {
		return err
	}
	recs, source, done, err := openClientRecords(cfg)
	if err != nil {
		return err
	}
	defer done()
	from := time.Now().Add(-since)
	all, err := recs.Accounts(auth.ClientRefused, from)
	if err != nil {
		return err
	}
	type row struct {
		user   string
		list   []auth.PasswordClient
		tries  int64
		latest auth.PasswordClient
	}
	var rows []row
	for _, acct := range accts.Accounts {
		list := all[auth.ClientUserKey(acct.User)]
		list = slices.DeleteFunc(slices.Clone(list), func(c auth.PasswordClient) bool { return c.Last.Before(from) })
		if len(list) == 0 {
			continue
		}
		r := row{user: acct.User, list: list, latest: list[0]}
		for _, c := range list {
			r.tries += c.Count
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		fmt.Fprintf(stdout, "No 2FA account has an app presenting its password since %s.\n%s\n", from.UTC().Format(time.RFC3339), source)
		return nil
	}
	slices.SortFunc(rows, func(a, b row) int { return b.latest.Last.Compare(a.latest.Last) })
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tAPPS\tATTEMPTS\tLAST SEEN\tLATEST APP")
	for _, r := range rows {
		name := r.latest.Label()
		if name == "" {
			name = "an app"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", r.user, len(r.list), r.tries, r.latest.Last.UTC().Format(time.RFC3339),
			strings.Join([]string{name, "(" + r.latest.Protocol + ")", "from", r.latest.IP}, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\nkanmon clients -config FILE USER shows each account's apps.\n", source)
	return nil
}
