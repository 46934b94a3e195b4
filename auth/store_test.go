package auth

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a CLI process adding passcodes,
// for TestStoreConcurrentProcesses.
const helperEnv = "KANMON_AUTH_STORE_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		// spec: path|user|app-prefix|count
		parts := strings.Split(spec, "|")
		n, _ := strconv.Atoi(parts[3])
		for i := range n {
			if err := addPasscode(OpenStore(parts[0]), parts[1], fmt.Sprintf("%s-%d", parts[2], i)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// addPasscode adds a passcode for app to user (creating the account) the
// way the CLI does.
func addPasscode(s *Store, user, app string) error {
	return s.Update(func(a *Accounts) error {
		acct := a.Lookup(user)
		if acct == nil {
			a.Accounts = append(a.Accounts, Account{User: user, Enabled: time.Now()})
			acct = &a.Accounts[len(a.Accounts)-1]
		}
		if acct.Passcode(app) != nil {
			return fmt.Errorf("%s exists", app)
		}
		acct.Passcodes = append(acct.Passcodes, AppPasscode{App: app, Created: time.Now(), Hash: validHash})
		return nil
	})
}

func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.toml")
	s := OpenStore(path)
	enabled := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	created := time.Date(2026, 11, 25, 12, 1, 0, 0, time.FixedZone("JST", 9*3600))
	want := Accounts{Accounts: []Account{
		{User: "alice", Enabled: enabled, Passcodes: []AppPasscode{
			{App: "Thunderbird", Created: created, Hash: validHash},
			{App: `Odd "name" \ é`, Created: created.Add(1500 * time.Millisecond), Hash: validHash},
		}},
		{User: "bob", Enabled: enabled},
		{User: "carol", Enabled: enabled,
			Authenticators: []Authenticator{
				{Name: "iPhone", TOTP: validSealed, Added: enabled.Add(time.Hour)},
				{Name: `Desk "top"`, TOTP: validSealed2, Added: created},
			},
			OneTimeCodes: []string{validHash, validHash2},
			Passcodes:    []AppPasscode{{App: "iPhone", Created: enabled, Hash: validHash2, Protocols: []string{"imap"}}}},
		{User: "dave", Enabled: enabled, Authenticators: []Authenticator{{Name: "Authenticator", TOTP: validSealed, Added: enabled}}}, // every one-time code used
	}}
	if err := s.Update(func(a *Accounts) error { *a = want; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Accounts) != len(want.Accounts) {
		t.Fatalf("got %+v", got)
	}
	for i, acct := range want.Accounts {
		g := got.Accounts[i]
		if g.User != acct.User || !g.Enabled.Equal(acct.Enabled) || g.TOTP != "" || !g.TOTPEnrolled.IsZero() ||
			!slices.Equal(g.OneTimeCodes, acct.OneTimeCodes) || g.HasTOTP() != (len(acct.Authenticators) > 0) ||
			len(g.Authenticators) != len(acct.Authenticators) || len(g.Passcodes) != len(acct.Passcodes) {
			t.Errorf("account %d: %+v, want %+v", i, g, acct)
			continue
		}
		for k, au := range acct.Authenticators {
			if ga := g.Authenticators[k]; ga.Name != au.Name || ga.TOTP != au.TOTP || !ga.Added.Equal(au.Added) {
				t.Errorf("authenticator %d/%d: %+v, want %+v", i, k, ga, au)
			}
		}
		for k, pc := range acct.Passcodes {
			if gp := g.Passcodes[k]; gp.App != pc.App || gp.Hash != pc.Hash || !gp.Created.Equal(pc.Created) || !slices.Equal(gp.Protocols, pc.Protocols) {
				t.Errorf("passcode %d/%d: %+v, want %+v", i, k, gp, pc)
			}
		}
	}
	data, _ := os.ReadFile(path)
	wantText := DefaultHeader + `[[account]]
user = "alice"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on

[[account.passcode]]
app = "Thunderbird"
created = 2026-11-25T03:01:00Z
hash = "` + validHash + `"

[[account.passcode]]
app = "Odd \"name\" \\ é"
created = 2026-11-25T03:01:01.5Z
hash = "` + validHash + `"

[[account]]
user = "bob"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on

[[account]]
user = "carol"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on
one_time_codes = [                    # hashes of the unused one-time codes
  "` + validHash + `",
  "` + validHash2 + `",
]

[[account.authenticator]]
name = "iPhone"
added = 2026-11-25T13:00:00Z
totp = "` + validSealed + `"  # its secret, sealed with state_dir/totp.key

[[account.authenticator]]
name = "Desk \"top\""
added = 2026-11-25T03:01:00Z
totp = "` + validSealed2 + `"  # its secret, sealed with state_dir/totp.key

[[account.passcode]]
app = "iPhone"
created = 2026-11-25T12:00:00Z
hash = "` + validHash2 + `"
protocols = ["imap"]

[[account]]
user = "dave"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on

[[account.authenticator]]
name = "Authenticator"
added = 2026-11-25T12:00:00Z
totp = "` + validSealed + `"  # its secret, sealed with state_dir/totp.key
`
	if string(data) != wantText {
		t.Errorf("file:\n%s\nwant:\n%s", data, wantText)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

// legacyAccounts is an accounts file as written before accounts could hold
// several authenticators: carol's authenticator is the account's own totp
// and totp_enrolled keys.
const legacyAccounts = DefaultHeader + `[[account]]
user = "carol"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on
totp = "` + validSealed + `"
totp_enrolled = 2026-11-25T13:00:00Z  # authenticator registered; totp is its secret, sealed with state_dir/totp.key
one_time_codes = [                    # hashes of the unused one-time codes
  "` + validHash + `",
]

[[account.passcode]]
app = "iPhone"
created = 2026-11-25T12:00:00Z
hash = "` + validHash2 + `"
`

// A file in the old layout reads as one authenticator named
// LegacyAuthenticatorName, and the next write puts it in the new layout;
// so does an Account a caller fills in the old way.
func TestStoreRewritesLegacyTOTP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.toml")
	if err := os.WriteFile(path, []byte(legacyAccounts), 0o600); err != nil {
		t.Fatal(err)
	}
	s := OpenStore(path)
	a, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	enrolled := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	carol := a.Lookup("carol")
	if carol.TOTP != "" || !carol.TOTPEnrolled.IsZero() || !carol.HasTOTP() || len(carol.Authenticators) != 1 ||
		carol.Authenticators[0].Name != LegacyAuthenticatorName || carol.Authenticators[0].TOTP != validSealed ||
		!carol.Authenticators[0].Added.Equal(enrolled) || len(carol.OneTimeCodes) != 1 || len(carol.Passcodes) != 1 {
		t.Fatalf("legacy account read as %+v", carol)
	}
	if data, _ := os.ReadFile(path); string(data) != legacyAccounts {
		t.Fatalf("reading rewrote the file:\n%s", data)
	}

	// The next write, about another account, moves carol's authenticator
	// into a table; an account filled in with the old fields is written
	// the new way too.
	enabled := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if err := s.Update(func(a *Accounts) error {
		a.Accounts = append(a.Accounts, Account{User: "erin", Enabled: enabled, TOTP: validSealed2, TOTPEnrolled: enabled})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	wantText := DefaultHeader + `[[account]]
user = "carol"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on
one_time_codes = [                    # hashes of the unused one-time codes
  "` + validHash + `",
]

[[account.authenticator]]
name = "Authenticator"
added = 2026-11-25T13:00:00Z
totp = "` + validSealed + `"  # its secret, sealed with state_dir/totp.key

[[account.passcode]]
app = "iPhone"
created = 2026-11-25T12:00:00Z
hash = "` + validHash2 + `"

[[account]]
user = "erin"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on

[[account.authenticator]]
name = "Authenticator"
added = 2026-11-25T12:00:00Z
totp = "` + validSealed2 + `"  # its secret, sealed with state_dir/totp.key
`
	if string(data) != wantText {
		t.Errorf("file:\n%s\nwant:\n%s", data, wantText)
	}
	for _, old := range []string{"totp_enrolled", "\ntotp = \"" + validSealed + "\"\n"} {
		if strings.Contains(string(data), old) {
			t.Errorf("the rewritten file still has %q", old)
		}
	}
	if _, err := ParseAccounts(path, data); err != nil {
		t.Errorf("the rewritten file does not read: %v", err)
	}
}

func TestStoreKeepsHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.toml")
	header := "# Site accounts.\n# Managed with kanmon passcode / kanmon 2fa.\n"
	if err := os.WriteFile(path, []byte(header+"\n"+exampleAccounts[len(DefaultHeader):]), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := addPasscode(OpenStore(path), "alice", "iPhone"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), header+"[[account]]\n") {
		t.Errorf("header not kept:\n%s", data)
	}
}

func TestStoreUpdateErrorWritesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "accounts.toml")
	s := OpenStore(path)
	boom := errors.New("boom")
	if err := s.Update(func(a *Accounts) error {
		a.Accounts = append(a.Accounts, Account{User: "alice"})
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file written after fn failed: %v", err)
	}
	if err := os.WriteFile(path, []byte(exampleAccounts), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, fn := range map[string]func(*Accounts) error{
		"fn error":  func(a *Accounts) error { a.Accounts = nil; return boom },
		"no change": func(a *Accounts) error { a.Accounts = nil; return ErrNoChange },
		"invalid result": func(a *Accounts) error {
			a.Accounts = append(a.Accounts, Account{User: "ALICE"})
			return nil
		},
	} {
		err := s.Update(fn)
		if (name == "no change") != (err == nil) {
			t.Errorf("%s: err = %v", name, err)
		}
		if data, _ := os.ReadFile(path); string(data) != exampleAccounts {
			t.Errorf("%s: file changed:\n%s", name, data)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestStoreRefusesBrokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.toml")
	broken := "[[account]]\nuser = \"alice\"\nbogus = 1\n"
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	err := addPasscode(OpenStore(path), "bob", "x")
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: ") {
		t.Fatalf("err = %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != broken {
		t.Errorf("broken file was overwritten")
	}
}

func TestStoreConcurrentGoroutines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.toml")
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			user := []string{"alice", "bob"}[i%2]
			errs[i] = addPasscode(OpenStore(path), user, fmt.Sprintf("app-%d", i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	checkApps(t, path, n, func(i int) (string, string) {
		return []string{"alice", "bob"}[i%2], fmt.Sprintf("app-%d", i)
	})
}

func TestStoreConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	path := filepath.Join(t.TempDir(), "accounts.toml")
	const procs, each = 5, 4
	cmds := make([]*exec.Cmd, procs)
	for p := range procs {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|alice|proc%d|%d", helperEnv, path, p, each))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[p] = cmd
	}
	// Meanwhile, goroutines of this process write too.
	var wg sync.WaitGroup
	for i := range each {
		wg.Go(func() {
			if err := addPasscode(OpenStore(path), "alice", fmt.Sprintf("main-%d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	for p, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v", p, err)
		}
	}
	wg.Wait()
	checkApps(t, path, (procs+1)*each, func(i int) (string, string) {
		if i < procs*each {
			return "alice", fmt.Sprintf("proc%d-%d", i/each, i%each)
		}
		return "alice", fmt.Sprintf("main-%d", i-procs*each)
	})
}

// checkApps verifies that the file holds exactly n passcodes, the i-th
// named by name(i).
func checkApps(t *testing.T, path string, n int, name func(int) (user, app string)) {
	t.Helper()
	a, err := LoadAccounts(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.NumPasscodes(); got != n {
		t.Errorf("%d passcodes, want %d", got, n)
	}
	for i := range n {
		user, app := name(i)
		if a.Lookup(user).Passcode(app) == nil {
			t.Errorf("%s/%s missing", user, app)
		}
	}
}
