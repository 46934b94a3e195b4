package accountsdb

import (
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kanmon-mail/kanmon/auth"
)

// loadAll reads every account with its passcodes and one-time codes,
// and each account's position (its order among the accounts).
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
		if enrolled != nil {
			acct.TOTPEnrolled = enrolled.UTC()
		}
		index[acct.User] = len(a.Accounts)
		a.Accounts = append(a.Accounts, acct)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
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

// sameAccount reports whether a and b hold the same data.
func sameAccount(a, b *auth.Account) bool {
	if a.User != b.User || !a.Enabled.Equal(b.Enabled) || a.TOTP != b.TOTP || !a.TOTPEnrolled.Equal(b.TOTPEnrolled) ||
		!slices.Equal(a.OneTimeCodes, b.OneTimeCodes) || len(a.Passcodes) != len(b.Passcodes) {
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
// account rewritten whole: its row, passcodes and codes), at generation
// g, and deletes those cur no longer has. A changed account keeps its
// position (its place in the export); a new one goes last. It reports
// whether anything changed.
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
		}
	}
	if batch.Len() == 0 {
		return false, nil
	}
	return true, tx.SendBatch(ctx, batch).Close()
}

// queueAccount queues the statements that replace acct at position pos.
func queueAccount(b *pgx.Batch, acct *auth.Account, pos int64, g int64) {
	var enrolled *time.Time
	if !acct.TOTPEnrolled.IsZero() {
		t := acct.TOTPEnrolled
		enrolled = &t
	}
	b.Queue("DELETE FROM accounts WHERE name = $1", acct.User)
	b.Queue("INSERT INTO accounts (name, position, enabled, totp, totp_enrolled, generation) VALUES ($1, $2, $3, $4, $5, $6)",
		acct.User, pos, acct.Enabled, acct.TOTP, enrolled, g)
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
