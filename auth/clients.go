package auth

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/internal/userkey"
)

// ClientKind says which of an account's two client records a sighting
// belongs to.
type ClientKind uint8

const (
	// ClientRefused: a 2FA account's login refused because the client
	// presented a secret that is not a passcode (the account password,
	// most likely): an app the user has not moved to a passcode yet.
	ClientRefused ClientKind = iota + 1
	// ClientPassword: a login of an account without 2FA that the backend
	// accepted with the account password: an app that will need a
	// passcode once 2FA is on.
	ClientPassword
)

// String names the kind in keys and messages: "refused", "password".
func (k ClientKind) String() string {
	switch k {
	case ClientRefused:
		return "refused"
	case ClientPassword:
		return "password"
	}
	return "unknown"
}

// Valid reports whether k is one of the kinds.
func (k ClientKind) Valid() bool { return k == ClientRefused || k == ClientPassword }

const (
	// MaxClientsPerAccount bounds the records an account keeps of each
	// kind: a storm of made-up clients evicts the least-seen ones, never
	// grows the store.
	MaxClientsPerAccount = 16
	// ClientRetention is how long a record is kept after its client was
	// last seen.
	ClientRetention = 30 * 24 * time.Hour
	// maxClientName and maxClientVersion bound the stored name and
	// version, in bytes; they arrive sanitised by the fronts already.
	maxClientName    = 64
	maxClientVersion = 32
)

// PasswordClient is one mail client that presented an account password:
// where from, which app, and how often. It never holds a secret.
type PasswordClient struct {
	// Protocol is imap, pop3 or submission.
	Protocol string `json:"protocol"`
	// Name is the client's IMAP ID "name", or its SMTP EHLO name; empty
	// when it gave none (POP3 always).
	Name string `json:"name,omitempty"`
	// Version is the client's IMAP ID "version", the latest seen.
	Version string `json:"version,omitempty"`
	// IP is the client's address.
	IP string `json:"ip"`
	// First and Last are when it was first and last seen.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Count is how many logins it made.
	Count int64 `json:"count"`
}

// Key is the client's identity within an account's record: protocol,
// name and address. A new version of the same app updates its row.
func (c PasswordClient) Key() string {
	return c.Protocol + "\x00" + c.Name + "\x00" + c.IP
}

// Label names the client for people: "Thunderbird 115.0", or "" when
// it gave no name.
func (c PasswordClient) Label() string { return strings.TrimSpace(c.Name + " " + c.Version) }

// sanitize bounds the free-text fields, so that whatever a front passes
// in, a record stays small and printable.
func (c PasswordClient) sanitize() PasswordClient {
	c.Name = printable(c.Name, maxClientName)
	c.Version = printable(c.Version, maxClientVersion)
	if c.Count < 1 {
		c.Count = 1
	}
	if c.First.IsZero() || (!c.Last.IsZero() && c.Last.Before(c.First)) {
		c.First = c.Last
	}
	return c
}

// printable keeps the printable ASCII of s, at most n bytes.
func printable(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// MergeClients adds the sightings in seen to list and returns the
// account's new record: a sighting of a known client adds to its count
// and moves its last seen (and version) on, a new client gets a row.
// Rows not seen within ClientRetention before now go. Beyond
// MaxClientsPerAccount rows, the least-counted go first (then the least
// recently seen), so a flood of one-off clients churns among itself and
// an app that keeps knocking stays. The result is ordered most recently
// seen first. list is not modified.
func MergeClients(list, seen []PasswordClient, now time.Time) []PasswordClient {
	out := make([]PasswordClient, 0, len(list)+len(seen))
	at := make(map[string]int, len(list)+len(seen))
	for _, part := range [][]PasswordClient{list, seen} {
		for _, c := range part {
			c = c.sanitize()
			if i, dup := at[c.Key()]; dup {
				out[i] = combine(out[i], c)
				continue
			}
			at[c.Key()] = len(out)
			out = append(out, c)
		}
	}
	return trimClients(out, now)
}

// combine merges two records of one client.
func combine(a, b PasswordClient) PasswordClient {
	r := a
	r.Count = a.Count + b.Count
	if b.First.Before(r.First) {
		r.First = b.First
	}
	if !b.Last.Before(a.Last) {
		r.Last = b.Last
		if b.Version != "" {
			r.Version = b.Version
		}
	}
	return r
}

// trimClients drops expired rows, keeps the MaxClientsPerAccount most
// counted (then most recent), and orders them most recent first.
func trimClients(list []PasswordClient, now time.Time) []PasswordClient {
	cut := now.Add(-ClientRetention)
	list = slices.DeleteFunc(list, func(c PasswordClient) bool { return !c.Last.After(cut) })
	if len(list) > MaxClientsPerAccount {
		slices.SortStableFunc(list, func(a, b PasswordClient) int {
			if c := cmp.Compare(b.Count, a.Count); c != 0 {
				return c
			}
			return b.Last.Compare(a.Last)
		})
		list = list[:MaxClientsPerAccount]
	}
	slices.SortStableFunc(list, func(a, b PasswordClient) int { return b.Last.Compare(a.Last) })
	return list
}

// ForgetMatch reports whether row is the client that just logged in as
// c with a passcode: the same protocol and app name, from anywhere when
// the app gave its name (a laptop moves), else from the same address.
func ForgetMatch(row, c PasswordClient) bool {
	if row.Protocol != c.Protocol {
		return false
	}
	if name := printable(c.Name, maxClientName); name != "" {
		return row.Name == name
	}
	return row.Name == "" && row.IP == c.IP
}

// ForgetClients returns list without the rows ForgetMatch matches to c.
func ForgetClients(list []PasswordClient, c PasswordClient) []PasswordClient {
	return slices.DeleteFunc(slices.Clone(list), func(row PasswordClient) bool { return ForgetMatch(row, c) })
}

// ClientUserKey is the key an account's records are stored under: its
// case-folded name, so that every spelling of it shares one record.
func ClientUserKey(user string) string { return userkey.Fold(user) }

// ClientKeeper is where the server notes the clients that present an
// account password, and where the portal, the admin socket and the CLI
// read them: a ClientStore (one node: bbolt, beside the passcodes' last
// use) or redisstate.Clients (several nodes, in Redis). Seen and Forget
// must never block a login on a disk or the network: implementations
// buffer and write in batches, applying each account's changes in the
// order they were made.
type ClientKeeper interface {
	// Seen notes a login of c for user (c.Last is when; c.Count and
	// c.First may be zero).
	Seen(kind ClientKind, user string, c PasswordClient)
	// Forget drops user's ClientRefused rows that ForgetMatch matches
	// to c: that app now logs in with a passcode.
	Forget(user string, c PasswordClient)
	// Clients returns user's record of kind, most recently seen first,
	// the changes not yet written included.
	Clients(kind ClientKind, user string) ([]PasswordClient, error)
	// Accounts returns, by ClientUserKey, the records of kind that have
	// a client seen since since.
	Accounts(kind ClientKind, since time.Time) (map[string][]PasswordClient, error)
}

// ClientChange is one buffered change to an account's record: a
// sighting, or a Forget when Forget is set.
type ClientChange struct {
	// Forget is set for a Forget of Client; else Client was seen.
	Forget bool
	// Client is the client seen, or the one to forget.
	Client PasswordClient
}

// ApplyClientChanges applies changes, in order, to list and trims the
// result as MergeClients does.
func ApplyClientChanges(list []PasswordClient, changes []ClientChange, now time.Time) []PasswordClient {
	var seen []PasswordClient
	flush := func() {
		if len(seen) > 0 {
			list = MergeClients(list, seen, now)
			seen = seen[:0]
		}
	}
	for _, ch := range changes {
		if ch.Forget {
			flush()
			list = ForgetClients(list, ch.Client)
			continue
		}
		seen = append(seen, ch.Client)
	}
	flush()
	return trimClients(slices.Clone(list), now)
}
