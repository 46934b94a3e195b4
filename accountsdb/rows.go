package accountsdb

import (
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kanmon-mail/kanmon/auth"
)

// loadAll reads every account with its authenticators, passcodes and
// one-time codes, and each account's position (its order among the
// accounts). The accounts are normalized (auth.Accounts.Normalize): an
// account's authenticators are its rows in authenticators when the first
// matches the mirror accounts.totp, else accounts.totp as the legacy
// authenticator (see the package doc).
func loadAll(ctx context.Context, tx pgx.Tx) (*auth.Accounts, map[string]int64, error) {
	rows, err := tx.Query(ctx, "SELECT name, position, enabled, totp, totp_enrolled FROM accounts ORDER BY position, name")
	if err != nil {
		return nil, nil, err
	}
	a := &auth.Accounts{}
	index := map[string]int{}
	positions := map[string]int64{}
	for rows.Next() {
		var acct auth.Account
		var enrolled *time.Time
		var pos int64
		if err := rows.Scan(&acct.User, &pos, &acct.Enabled, &acct.TOTP, &enrolled); err != nil {
			rows.Close()
			return nil, nil, err
		}
		positions[acct.User] = pos
		acct.Enabled = acct.Enabled.UTC()
		if acct.TOTP != "" {
			// A legacy authenticator unless rows that match it follow.
			acct.TOTPEnrolled = acct.Enabled
			if enrolled != nil {
				acct.TOTPEnrolled = enrolled.UTC()
			}
		}
		index[acct.User] = len(a.Accounts)
		a.Accounts = append(a.Accounts, acct)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	rows, err = tx.Query(ctx, "SELECT account, name, totp, added FROM authenticators ORDER BY account, position")
	if err != nil {
		return nil, nil, err
	}
	authenticators := map[string][]auth.Authenticator{}
	for rows.Next() {
		var user string
		var au auth.Authenticator
		if err := rows.Scan(&user, &au.Name, &au.TOTP, &au.Added); err != nil {
			rows.Close()
			return nil, nil, err
		}
		au.Added = au.Added.UTC()
		authenticators[user] = append(authenticators[user], au)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	for i := range a.Accounts {
		acct := &a.Accounts[i]
		// Rows whose first is not the mirror are stale: an old node has
		// replaced the account since a new one wrote them.
		if list := authenticators[acct.User]; len(list) > 0 && list[0].TOTP == acct.TOTP {
			acct.Authenticators = list
			acct.TOTP, acct.TOTPEnrolled = "", time.Time{}
		}
	}
	a.Normalize()
	rows, err = tx.Query(ctx, "SELECT account, app, created, hash, protocols FROM passcodes ORDER BY account, position")
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var user string
		var p auth.AppPasscode
		if err := rows.Scan(&user, &p.App, &p.Created, &p.Hash, &p.Protocols); err != nil {
			rows.Close()
			return nil, nil, err
		}
		p.Created = p.Created.UTC()
		if len(p.Protocols) == 0 {
			p.Protocols = nil
		}
		if i, ok := index[user]; ok {
			a.Accounts[i].Passcodes = append(a.Accounts[i].Passcodes, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	rows, err = tx.Query(ctx, "SELECT account, hash FROM one_time_codes ORDER BY account, position")
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var user, hash string
		if err := rows.Scan(&user, &hash); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if i, ok := index[user]; ok {
			a.Accounts[i].OneTimeCodes = append(a.Accounts[i].OneTimeCodes, hash)
		}
	}
	rows.Close()
	return a, positions, rows.Err()
}

// cloneAccounts returns a deep copy of a, for an Update's callback.
func cloneAccounts(a *auth.Accounts) *auth.Accounts {
	out := &auth.Accounts{Accounts: make([]auth.Account, len(a.Accounts))}
	for i, acct := range a.Accounts {
		c := acct
		c.Authenticators = slices.Clone(acct.Authenticators)
		c.OneTimeCodes = slices.Clone(acct.OneTimeCodes)
		c.Passcodes = make([]auth.AppPasscode, len(acct.Passcodes))
		for k, p := range acct.Passcodes {
			p.Protocols = slices.Clone(p.Protocols)
			c.Passcodes[k] = p
		}
		if len(c.Passcodes) == 0 {
			c.Passcodes = nil
		}
		out.Accounts[i] = c
	}
	return out
}

// sameAccount reports whether a and b hold the same data. A legacy
// authenticator (Account.TOTP) counts as the first of the list, as it is
// written.
func sameAccount(a, b *auth.Account) bool {
	if a.User != b.User || !a.Enabled.Equal(b.Enabled) ||
		!slices.Equal(a.OneTimeCodes, b.OneTimeCodes) || len(a.Passcodes) != len(b.Passcodes) {
		return false
	}
	if !slices.EqualFunc(a.AllAuthenticators(), b.AllAuthenticators(), func(x, y auth.Authenticator) bool {
		return x.Name == y.Name && x.TOTP == y.TOTP && x.Added.Equal(y.Added)
	}) {
		return false
	}
	for i := range a.Passcodes {
		p, q := &a.Passcodes[i], &b.Passcodes[i]
		if p.App != q.App || !p.Created.Equal(q.Created) || p.Hash != q.Hash || !slices.Equal(p.Protocols, q.Protocols) {
			return false
		}
	}
	return true
}

// writeChanges writes the accounts of cur that differ from old (an
// account rewritten whole: its row, authenticators, passcodes and
// codes), at generation g, and deletes those cur no longer has. A
// changed account keeps its position (its place in the export); a new
// one goes last. It reports whether anything changed.
func writeChanges(ctx context.Context, tx pgx.Tx, old, cur *auth.Accounts, positions map[string]int64, g int64) (bool, error) {
	before := map[string]int{}
	next := int64(0)
	for i := range old.Accounts {
		before[old.Accounts[i].User] = i
		next = max(next, positions[old.Accounts[i].User]+1)
	}
	keep := map[string]bool{}
	batch := &pgx.Batch{}
	for k := range cur.Accounts {
		acct := &cur.Accounts[k]
		keep[acct.User] = true
		i, existed := before[acct.User]
		if existed && sameAccount(&old.Accounts[i], acct) {
			continue
		}
		pos, ok := positions[acct.User]
		if !existed || !ok {
			pos = next
			next++
		}
		queueAccount(batch, acct, pos, g)
	}
	for _, acct := range old.Accounts {
		if !keep[acct.User] {
			batch.Queue("DELETE FROM accounts WHERE name = $1", acct.User)
			batch.Queue("DELETE FROM authenticators WHERE account = $1", acct.User)
		}
	}
	if batch.Len() == 0 {
		return false, nil
	}
	return true, tx.SendBatch(ctx, batch).Close()
}

// queueAccount queues the statements that replace acct at position pos:
// its authenticators in order (a legacy one first), and the mirror of
// the first in accounts.totp and totp_enrolled, for the nodes that read
// only those.
func queueAccount(b *pgx.Batch, acct *auth.Account, pos int64, g int64) {
	all := acct.AllAuthenticators()
	mirror := ""
	var enrolled *time.Time
	if len(all) > 0 {
		mirror = all[0].TOTP
		if t := all[0].Added; !t.IsZero() {
			enrolled = &t
		}
	}
	b.Queue("DELETE FROM accounts WHERE name = $1", acct.User)
	b.Queue("DELETE FROM authenticators WHERE account = $1", acct.User)
	b.Queue("INSERT INTO accounts (name, position, enabled, totp, totp_enrolled, generation) VALUES ($1, $2, $3, $4, $5, $6)",
		acct.User, pos, acct.Enabled, mirror, enrolled, g)
	for k, au := range all {
		b.Queue("INSERT INTO authenticators (account, position, name, totp, added) VALUES ($1, $2, $3, $4, $5)",
			acct.User, k, au.Name, au.TOTP, au.Added)
	}
	for k, p := range acct.Passcodes {
		protocols := p.Protocols
		if protocols == nil {
			protocols = []string{}
		}
		b.Queue("INSERT INTO passcodes (account, position, app, created, hash, protocols) VALUES ($1, $2, $3, $4, $5, $6)",
			acct.User, k, p.App, p.Created, p.Hash, protocols)
	}
	for k, h := range acct.OneTimeCodes {
		b.Queue("INSERT INTO one_time_codes (account, position, hash) VALUES ($1, $2, $3)", acct.User, k, h)
	}
}
