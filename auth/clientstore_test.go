package auth

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openClientStore opens a last-use database in a temp dir, with no timed
// flush during the test, and its client store.
func openClientStore(t *testing.T) (path string, lu *LastUseStore, cs *ClientStore) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "state", LastUseDBName)
	lu, err := OpenLastUse(path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cs = lu.Clients()
	if lu.Clients() != cs {
		t.Fatalf("Clients made a second store")
	}
	return path, lu, cs
}

// stored reads the written records of kind, without what waits.
func stored(t *testing.T, cs *ClientStore, kind ClientKind) map[string][]PasswordClient {
	t.Helper()
	all, err := readClientAccounts(cs.db, kind)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// accountNames returns the sorted keys of a record map.
func accountNames(m map[string][]PasswordClient) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestClientStore(t *testing.T) {
	path, lu, cs := openClientStore(t)
	now := time.Now().UTC().Truncate(time.Second)
	tb := PasswordClient{Protocol: "imap", Name: "Thunderbird", Version: "128.0", IP: "192.0.2.1", Last: now}

	// Seen three times, under three spellings: one row, counted 3, read
	// before anything is written.
	for _, user := range []string{"Alice", "alice", "ALICE"} {
		cs.Seen(ClientRefused, user, tb)
	}
	clients := func(kind ClientKind, user string) []PasswordClient {
		t.Helper()
		list, err := cs.Clients(kind, user)
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	if got := clients(ClientRefused, "alice"); len(got) != 1 || got[0].Count != 3 || got[0].Version != "128.0" {
		t.Fatalf("before the flush:\n%s", rows(got))
	}
	if len(stored(t, cs, ClientRefused)) != 0 {
		t.Fatalf("written before the flush")
	}
	if err := cs.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := stored(t, cs, ClientRefused)["alice"]; len(s) != 1 || s[0].Count != 3 || !s[0].First.Equal(now) || !s[0].Last.Equal(now) {
		t.Fatalf("written:\n%s", rows(s))
	}
	if got := clients(ClientRefused, "Alice"); len(got) != 1 || got[0].Count != 3 {
		t.Errorf("after the flush (counted twice?):\n%s", rows(got))
	}
	if got := clients(ClientPassword, "alice"); len(got) != 0 {
		t.Errorf("the password record has the refused one's rows:\n%s", rows(got))
	}

	// Changes not written yet are part of what Clients returns.
	cs.Seen(ClientRefused, "alice", tb)
	if got := clients(ClientRefused, "alice"); len(got) != 1 || got[0].Count != 4 {
		t.Errorf("a pending sighting:\n%s", rows(got))
	}
	cs.Forget("alice", PasswordClient{Protocol: "imap", Name: "Thunderbird", IP: "203.0.113.7"})
	if got := clients(ClientRefused, "alice"); len(got) != 0 {
		t.Errorf("a pending Forget:\n%s", rows(got))
	}
	if err := cs.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := stored(t, cs, ClientRefused); len(s) != 0 {
		t.Errorf("a record emptied by Forget is still stored: %v", accountNames(s))
	}

	// Accounts: the records of a kind with a client seen since a time.
	cs.Seen(ClientRefused, "bob", PasswordClient{Protocol: "pop3", IP: "192.0.2.2", Last: now.Add(-10 * 24 * time.Hour)})
	cs.Seen(ClientPassword, "carol", tb)
	cs.Seen(ClientRefused, "erin", PasswordClient{Protocol: "pop3", IP: "192.0.2.3", Last: now.Add(-ClientRetention - time.Hour)}) // expired
	if err := cs.Flush(); err != nil {
		t.Fatal(err)
	}
	cs.Seen(ClientRefused, "Dave", tb) // pending
	for _, tc := range []struct {
		kind  ClientKind
		since time.Time
		want  []string
	}{
		{ClientRefused, now.Add(-24 * time.Hour), []string{"dave"}},
		{ClientRefused, now.Add(-20 * 24 * time.Hour), []string{"bob", "dave"}},
		{ClientRefused, now.Add(time.Hour), nil},
		{ClientPassword, now.Add(-24 * time.Hour), []string{"carol"}},
	} {
		got, err := cs.Accounts(tc.kind, tc.since)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(accountNames(got), tc.want) {
			t.Errorf("Accounts(%v, %v): %v, want %v", tc.kind, tc.since, accountNames(got), tc.want)
		}
	}

	// Close writes what waits (Dave's sighting, and frank's) beside the
	// passcodes' last use, which keeps its own records.
	lu.Record("id-a", LastUse{User: "alice", App: "Thunderbird", Time: now, ClientIP: "192.0.2.1", Protocol: "imap"})
	cs.Seen(ClientRefused, "frank", tb)
	if err := lu.Close(); err != nil {
		t.Fatal(err)
	}
	cs.Seen(ClientRefused, "grace", tb) // after Close: no panic
	cs.Forget("grace", tb)

	// Read-only, as the CLI reads it while no server runs.
	list, err := ReadClients(path, ClientRefused, "DAVE")
	if err != nil || len(list) != 1 || list[0].Name != "Thunderbird" || list[0].Count != 1 {
		t.Errorf("ReadClients(dave): %v\n%s", err, rows(list))
	}
	if list, err := ReadClients(path, ClientPassword, "dave"); err != nil || len(list) != 0 {
		t.Errorf("ReadClients(password, dave): %v %v", list, err)
	}
	for _, tc := range []struct {
		kind  ClientKind
		since time.Time
		want  []string
	}{
		{ClientRefused, now.Add(-24 * time.Hour), []string{"dave", "frank"}},
		{ClientRefused, now.Add(-20 * 24 * time.Hour), []string{"bob", "dave", "frank"}},
		{ClientPassword, time.Time{}, []string{"carol"}},
	} {
		got, err := ReadClientAccounts(path, tc.kind, tc.since)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(accountNames(got), tc.want) {
			t.Errorf("ReadClientAccounts(%v, %v): %v, want %v", tc.kind, tc.since, accountNames(got), tc.want)
		}
	}
	if uses, err := ReadLastUse(path); err != nil || len(uses) != 1 || uses["id-a"].App != "Thunderbird" {
		t.Errorf("the last-use records: %+v %v", uses, err)
	}
}

func TestReadClientsMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", LastUseDBName)
	if list, err := ReadClients(path, ClientRefused, "alice"); err != nil || len(list) != 0 {
		t.Errorf("ReadClients: %v %v", list, err)
	}
	if all, err := ReadClientAccounts(path, ClientRefused, time.Time{}); err != nil || all == nil || len(all) != 0 {
		t.Errorf("ReadClientAccounts: %v %v", all, err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("reading created %s", filepath.Dir(path))
	}
}

// The file holds the documented fields of each client and nothing else:
// free text beyond its bound, or a spelling of the account that is not
// its key, is never written.
func TestClientStoreStoresOnlyTheFields(t *testing.T) {
	path, lu, cs := openClientStore(t)
	now := time.Now().UTC().Truncate(time.Second)
	longName := "Thunderbird" + strings.Repeat("n", maxClientName-len("Thunderbird")) + "NAMETAIL"
	longVersion := strings.Repeat("9", maxClientVersion) + "VERSIONTAIL"
	cs.Seen(ClientRefused, "Alice", PasswordClient{Protocol: "imap", Name: longName, Version: longVersion, IP: "192.0.2.1", Last: now})
	cs.Seen(ClientPassword, "Alice", PasswordClient{Protocol: "submission", Name: "mail.example.org", IP: "192.0.2.2", Last: now})
	if err := lu.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Thunderbird", "mail.example.org", "refused\x00alice", "password\x00alice", `"ip":"192.0.2.1"`} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("the file lacks %q", want)
		}
	}
	for _, never := range []string{"NAMETAIL", "VERSIONTAIL", "Alice"} {
		if bytes.Contains(raw, []byte(never)) {
			t.Errorf("the file holds %q", never)
		}
	}

	// Each row has exactly the documented keys (version and name only
	// when given).
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: boltTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	documented := []string{"count", "first", "ip", "last", "name", "protocol", "version"}
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(clientsBucket).ForEach(func(k, v []byte) error {
			var list []map[string]json.RawMessage
			if err := json.Unmarshal(v, &list); err != nil {
				t.Errorf("%q: %v", k, err)
				return nil
			}
			for _, row := range list {
				n++
				var keys []string
				for key := range row {
					keys = append(keys, key)
				}
				slices.Sort(keys)
				want := documented
				if _, ok := row["version"]; !ok {
					want = slices.DeleteFunc(slices.Clone(documented), func(s string) bool { return s == "version" })
				}
				if !slices.Equal(keys, want) {
					t.Errorf("%q: row with keys %q, want %q", k, keys, want)
				}
			}
			return nil
		})
	})
	if err != nil || n != 2 {
		t.Errorf("%d rows read: %v", n, err)
	}
}

func TestClientStoreTimedFlush(t *testing.T) {
	path := filepath.Join(t.TempDir(), LastUseDBName)
	lu, err := OpenLastUse(path, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer lu.Close()
	cs := lu.Clients()
	cs.Seen(ClientRefused, "alice", PasswordClient{Protocol: "pop3", IP: "192.0.2.1", Last: time.Now()})
	deadline := time.Now().Add(5 * time.Second)
	for len(stored(t, cs, ClientRefused)["alice"]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sighting was never written")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
