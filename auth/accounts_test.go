package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validHash is a well-formed hash (of no particular passcode).
const validHash = "hmac-sha256$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// validHash2 is another well-formed hash.
const validHash2 = "hmac-sha256$BBBBBBBBBBBBBBBBBBBBBA$BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA"

// validSealed is a well-formed sealed TOTP secret (that opens under no key).
const validSealed = "aes-256-gcm$AAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// validSealed2 is another well-formed sealed TOTP secret.
const validSealed2 = "aes-256-gcm$BQUFBQUFBQUFBQUF$BgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgY"

const exampleAccounts = `# kanmon accounts: every account listed here has two-factor authentication on.
[[account]]
user = "alice"
enabled = 2026-11-25T12:00:00Z        # when 2FA was turned on

[[account.passcode]]
app = "Thunderbird"
created = 2026-11-25T12:01:00Z
hash = "` + validHash + `"
`

func TestParseAccountsExample(t *testing.T) {
	a, err := ParseAccounts("accounts.toml", []byte(exampleAccounts))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Accounts) != 1 {
		t.Fatalf("got %d accounts", len(a.Accounts))
	}
	acct := a.Accounts[0]
	if acct.User != "alice" || !acct.Enabled.Equal(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("account = %+v", acct)
	}
	if len(acct.Passcodes) != 1 || acct.Passcodes[0].App != "Thunderbird" || acct.Passcodes[0].Hash != validHash ||
		!acct.Passcodes[0].Created.Equal(time.Date(2026, 11, 25, 12, 1, 0, 0, time.UTC)) {
		t.Errorf("passcodes = %+v", acct.Passcodes)
	}
	if a.Lookup("ALICE") != &a.Accounts[0] || a.Lookup("bob") != nil {
		t.Errorf("Lookup is not case-insensitive or finds strangers")
	}
	if acct.Passcode("thunderbird") == nil || acct.Passcode("iPhone") != nil {
		t.Errorf("Account.Passcode lookup wrong")
	}
	if a.NumPasscodes() != 1 {
		t.Errorf("NumPasscodes = %d", a.NumPasscodes())
	}
}

func TestLoadAccountsMissing(t *testing.T) {
	a, err := LoadAccounts(filepath.Join(t.TempDir(), "nope.toml"))
	if err != nil || a == nil || len(a.Accounts) != 0 {
		t.Fatalf("missing file: %v, %v", a, err)
	}
}

func TestLoadAccountsUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be is an error, not "no accounts".
	if _, err := LoadAccounts(dir); err == nil {
		t.Fatalf("reading a directory succeeded")
	}
}

func TestAccountsErrors(t *testing.T) {
	acct := func(user string) string {
		return "[[account]]\nuser = " + user + "\nenabled = 2026-11-25T12:00:00Z\n"
	}
	pc := func(app, hash string) string {
		return "\n[[account.passcode]]\napp = " + app + "\ncreated = 2026-11-25T12:01:00Z\nhash = " + hash + "\n"
	}
	vh := `"` + validHash + `"`
	vs := `totp = "` + validSealed + `"` + "\n"
	enrolled := "totp_enrolled = 2026-11-25T12:00:00Z\n"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"syntax", "# c\n[[account]]\nuser = \"alice\n", "accounts.toml:3: "},
		{"unknown top-level key", "# c\nfoo = 1\n", `accounts.toml:2: unknown key "foo"`},
		{"unknown account key", "# c\n" + acct(`"alice"`) + "password = \"x\"\n", `accounts.toml:5: unknown key "account.password"`},
		{"unknown passcode key", "# c\n" + acct(`"alice"`) + pc(`"T"`, vh) + "secret = \"x\"\n", `accounts.toml:10: unknown key "account.passcode.secret"`},
		{"wrong type", "# c\n" + acct(`5`), "accounts.toml:3: "},
		{"bad time", "# c\n[[account]]\nuser = \"a\"\nenabled = \"yesterday\"\n", "accounts.toml:4: "},
		{"empty user", "# c\n" + acct(`"alice"`) + "\n" + acct(`""`), "accounts.toml:7: account: user is required"},
		{"missing user", "# c\n" + acct(`"alice"`) + "\n[[account]]\nenabled = 2026-11-25T12:00:00Z\n", "accounts.toml:6: account: user is required"},
		{"control char in user", "# c\n" + acct(`"al\nice"`), "accounts.toml:3: account: user"},
		{"duplicate user", "# c\n" + acct(`"alice"`) + pc(`"T"`, vh) + "\n" + acct(`"ALICE"`), `accounts.toml:11: account "ALICE": user is listed twice (also line 2)`},
		{"empty app", "# c\n" + acct(`"alice"`) + pc(`"T"`, vh) + pc(`""`, vh), `accounts.toml:12: account "alice": passcode: app is required`},
		{"missing app", "# c\n" + acct(`"alice"`) + "\n[[account.passcode]]\nhash = " + vh + "\n", `accounts.toml:6: account "alice": passcode: app is required`},
		{"long app", "# c\n" + acct(`"alice"`) + pc(`"`+strings.Repeat("x", 65)+`"`, vh), `accounts.toml:7: account "alice": passcode: app is longer than 64`},
		{"duplicate app", "# c\n" + acct(`"alice"`) + pc(`"iPhone"`, vh) + pc(`"IPHONE"`, vh), `accounts.toml:11: account "alice": passcode "IPHONE": app name is used twice (also line 6)`},
		{"malformed hash", "# c\n" + acct(`"alice"`) + pc(`"T"`, `"hmac-sha256$abc$def"`), `accounts.toml:9: account "alice": passcode "T": malformed hash`},
		{"missing hash", "# c\n" + acct(`"alice"`) + "\n[[account.passcode]]\napp = \"T\"\n", `accounts.toml:6: account "alice": passcode "T": malformed hash`},
		{"plaintext hash", "# c\n" + acct(`"bob"`) + pc(`"T"`, `"ABCDEFGHIJKLMNOP"`), `accounts.toml:9: account "bob": passcode "T": malformed hash`},
		// The account's own totp and totp_enrolled keys, as files written
		// before accounts held several authenticators have them: still
		// read, so still checked, with the same messages and lines.
		{"malformed totp", "# c\n" + acct(`"alice"`) + `totp = "aes-256-gcm$AAAA$AAAA"` + "\n" + enrolled, `accounts.toml:5: account "alice": malformed totp: nonce`},
		{"plaintext totp", "# c\n" + acct(`"alice"`) + enrolled + `totp = "ABCD EFGH IJKL MNOP"` + "\n", `accounts.toml:6: account "alice": malformed totp`},
		{"totp not a string", "# c\n" + acct(`"alice"`) + "totp = 5\n", "accounts.toml:5: "},
		{"totp without totp_enrolled", "# c\n" + acct(`"alice"`) + vs, `accounts.toml:5: account "alice": totp needs totp_enrolled`},
		{"totp_enrolled without totp", "# c\n" + acct(`"alice"`) + enrolled, `accounts.toml:5: account "alice": totp_enrolled without totp`},
		{"one_time_codes without an authenticator", "# c\n" + acct(`"alice"`) + "one_time_codes = [" + vh + "]\n", `accounts.toml:5: account "alice": one_time_codes without an authenticator`},
		{"malformed one-time code", "# c\n" + acct(`"alice"`) + vs + enrolled + "one_time_codes = [\n  " + vh + `,
  "abcde-fghjk",
]
`, `accounts.toml:7: account "alice": one_time_codes[1]: malformed hash`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAccounts("accounts.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("no error for\n%s", tc.doc)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q\nwant prefix %q\ndoc:\n%s", err, tc.want, tc.doc)
			}
		})
	}
}

func TestLoadAccountsErrorNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.toml")
	if err := os.WriteFile(path, []byte("[[account]]\nuser = \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadAccounts(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: ") {
		t.Fatalf("err = %v", err)
	}
}

func TestFoldKey(t *testing.T) {
	for _, pair := range [][2]string{
		{"alice", "ALICE"},
		{"kelvin", "\u212aelvin"}, // KELVIN SIGN folds to k
		{"straße", "STRASSE"},     // not equal under simple folding
		{"Ünï", "üNÏ"},
		{"σς", "ΣΣ"},
	} {
		eq := foldKey(pair[0]) == foldKey(pair[1])
		if eq != strings.EqualFold(pair[0], pair[1]) {
			t.Errorf("foldKey(%q)==foldKey(%q) is %v, EqualFold says %v", pair[0], pair[1], eq, !eq)
		}
	}
}

func TestValidateNames(t *testing.T) {
	for _, ok := range []string{"Thunderbird", "iPhone 15", "Outlook (PC)", "メール", strings.Repeat("é", 64)} {
		if err := ValidateApp(ok); err != nil {
			t.Errorf("ValidateApp(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", " x", "x ", "a\tb", "a\nb", "\x7f", strings.Repeat("x", 65), "\xff"} {
		if err := ValidateApp(bad); err == nil {
			t.Errorf("ValidateApp(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", " alice", "al\x00ice", strings.Repeat("u", 256)} {
		if err := ValidateUser(bad); err == nil {
			t.Errorf("ValidateUser(%q) accepted", bad)
		}
	}
}
