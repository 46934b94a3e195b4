package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/otp"
)

// totpEnv is an accounts file and a state directory in a temp dir.
type totpEnv struct {
	dir, state, path string
	s                *Store
}

func newTOTPEnv(t *testing.T) *totpEnv {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "accounts.toml")
	return &totpEnv{dir: dir, state: filepath.Join(dir, "state"), path: path, s: OpenStore(path)}
}

// enroll registers a new authenticator for user and returns its secret
// and the one-time codes.
func (e *totpEnv) enroll(t *testing.T, user string) ([]byte, []string) {
	t.Helper()
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	codes, err := EnrollTOTP(e.s, e.state, user, secret)
	if err != nil {
		t.Fatalf("EnrollTOTP(%s): %v", user, err)
	}
	return secret, codes
}

// check runs CheckSecondFactor and fails the test on an error.
func (e *totpEnv) check(t *testing.T, user, code string, now time.Time, g *otp.ReplayGuard) (SecondFactor, bool) {
	t.Helper()
	kind, ok, err := CheckSecondFactor(e.s, e.state, user, code, now, g)
	if err != nil {
		t.Fatalf("CheckSecondFactor(%s, %q): %v", user, code, err)
	}
	if ok == (kind == SecondFactorNone) {
		t.Fatalf("CheckSecondFactor(%s, %q): kind %v with ok %v", user, code, kind, ok)
	}
	return kind, ok
}

func (e *totpEnv) status(t *testing.T, user string) TwoFAStatus {
	t.Helper()
	st, err := Status(e.s, user)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var oneTimeCodeRE = regexp.MustCompile(`^[23456789abcdefghjkmnpqrstuvwxyz]{5}-[23456789abcdefghjkmnpqrstuvwxyz]{5}$`)

func TestEnrollAndSignIn(t *testing.T) {
	e := newTOTPEnv(t)
	if st := e.status(t, "alice"); st.On || st.HasTOTP() || st.User != "alice" {
		t.Fatalf("status before enrollment: %+v", st)
	}
	secret, codes := e.enroll(t, "Alice")

	// Status: 2FA on, with an authenticator and 10 one-time codes.
	st := e.status(t, "ALICE")
	if !st.On || st.User != "Alice" || !st.HasTOTP() || st.OneTimeCodesLeft != OneTimeCodeCount || len(st.Passcodes) != 0 ||
		!st.Enabled.Equal(st.TOTPEnrolled) || time.Since(st.TOTPEnrolled) > time.Minute {
		t.Fatalf("status after enrollment: %+v", st)
	}
	if len(codes) != OneTimeCodeCount {
		t.Fatalf("%d one-time codes, want %d", len(codes), OneTimeCodeCount)
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if !oneTimeCodeRE.MatchString(c) || seen[c] {
			t.Errorf("one-time code %q malformed or repeated", c)
		}
		seen[c] = true
	}
	for name, want := range map[string]int64{PepperFileName: PepperSize, TOTPKeyFileName: 32} {
		fi, err := os.Stat(filepath.Join(e.state, name))
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != want {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}

	// TOTP: the current code works once; an older one after it never;
	// the next step's code works.
	var g otp.ReplayGuard
	now := time.Now()
	code := otp.Code(secret, now)
	if kind, ok := e.check(t, "alice", code, now, &g); !ok || kind != SecondFactorTOTP {
		t.Fatalf("current code: %v %v", kind, ok)
	}
	if _, ok := e.check(t, "alice", code, now.Add(time.Second), &g); ok {
		t.Errorf("the same TOTP code was accepted twice")
	}
	if _, ok := e.check(t, "ALICE", otp.Code(secret, now.Add(-otp.Period)), now, &g); ok {
		t.Errorf("the previous step's code was accepted after the current one")
	}
	next := otp.Code(secret, now.Add(otp.Period))
	if _, ok := e.check(t, "alice", next[:3]+" "+next[3:], now.Add(otp.Period), &g); !ok {
		t.Errorf("the next step's code (typed with a space) was refused")
	}
	if _, ok := e.check(t, "alice", otp.Code(secret, now.Add(4*otp.Period)), now.Add(otp.Period), &g); ok {
		t.Errorf("a code 3 steps ahead was accepted")
	}
	if _, ok := e.check(t, "alice", otp.Code([]byte("0123456789"), now), now, &g); ok {
		t.Errorf("another secret's code was accepted")
	}

	// One-time codes: each works once, typed any way.
	if kind, ok := e.check(t, "alice", codes[0], now, &g); !ok || kind != SecondFactorOneTimeCode {
		t.Fatalf("one-time code: %v %v", kind, ok)
	}
	if _, ok := e.check(t, "alice", codes[0], now, &g); ok {
		t.Errorf("a one-time code worked twice")
	}
	if got := e.status(t, "alice").OneTimeCodesLeft; got != OneTimeCodeCount-1 {
		t.Errorf("%d one-time codes left, want %d", got, OneTimeCodeCount-1)
	}
	typed := strings.ToUpper(strings.ReplaceAll(codes[1], "-", " "))
	if _, ok := e.check(t, "alice", typed, now, &g); !ok {
		t.Errorf("one-time code typed as %q refused", typed)
	}
	if _, ok := e.check(t, "alice", strings.ReplaceAll(codes[2], "-", ""), now, &g); !ok {
		t.Errorf("one-time code without hyphen refused")
	}
	near := codes[3][:10] + "2"
	if near == codes[3] {
		near = codes[3][:10] + "3"
	}
	for _, wrong := range []string{"22222-22222", near, codes[3] + "2", "", "password", "1234567"} {
		if _, ok := e.check(t, "alice", wrong, now, &g); ok {
			t.Errorf("wrong code %q accepted", wrong)
		}
	}
	if got := e.status(t, "alice").OneTimeCodesLeft; got != OneTimeCodeCount-3 {
		t.Errorf("%d one-time codes left, want %d", got, OneTimeCodeCount-3)
	}
	// Another user's codes are not alice's.
	if _, ok := e.check(t, "bob", codes[4], now, &g); ok {
		t.Errorf("unknown user accepted a one-time code")
	}

	// A second enrollment is refused and changes nothing.
	before, _ := os.ReadFile(e.path)
	if _, err := EnrollTOTP(e.s, e.state, "alice", secret); !errors.Is(err, ErrTOTPEnrolled) {
		t.Errorf("second enrollment: %v", err)
	}
	if after, _ := os.ReadFile(e.path); !bytes.Equal(before, after) {
		t.Errorf("refused enrollment rewrote the file")
	}

	// The file has no secret in clear: neither the key in any spelling,
	// nor the raw bytes, nor any one-time code.
	data, _ := os.ReadFile(e.path)
	key := otp.FormatKey(secret)
	for _, leak := range []string{key, strings.ReplaceAll(key, " ", ""), strings.ToLower(strings.ReplaceAll(key, " ", "")),
		string(secret), hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret)} {
		if bytes.Contains(data, []byte(leak)) {
			t.Errorf("accounts file contains the secret as %q", leak)
		}
	}
	for _, c := range codes {
		if bytes.Contains(data, []byte(c)) || bytes.Contains(data, []byte(strings.ReplaceAll(c, "-", ""))) {
			t.Errorf("accounts file contains one-time code %s", c)
		}
	}
	if _, err := LoadAccounts(e.path); err != nil {
		t.Errorf("the written file does not load: %v", err)
	}
}

func TestEnrollAdminAccount(t *testing.T) {
	e := newTOTPEnv(t)
	// As kanmon 2fa enable writes it, some time ago.
	if err := os.WriteFile(e.path, []byte("[[account]]\nuser = \"bob\"\nenabled = 2024-01-02T03:04:05Z\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := AddPasscode(e.s, e.state, "bob", "Thunderbird"); err != nil {
		t.Fatal(err)
	}
	st := e.status(t, "bob")
	if !st.On || st.HasTOTP() || st.OneTimeCodesLeft != 0 || len(st.Passcodes) != 1 {
		t.Fatalf("admin account: %+v", st)
	}
	// Without an authenticator, no second factor is accepted.
	var g otp.ReplayGuard
	if _, ok := e.check(t, "bob", "123456", time.Now(), &g); ok {
		t.Errorf("TOTP code accepted without an authenticator")
	}
	if _, ok := e.check(t, "bob", "22222-22222", time.Now(), &g); ok {
		t.Errorf("one-time code accepted without an authenticator")
	}

	secret, _ := e.enroll(t, "BOB")
	after := e.status(t, "bob")
	if !after.HasTOTP() || after.User != "bob" || !after.Enabled.Equal(st.Enabled) || !after.TOTPEnrolled.After(st.Enabled) ||
		len(after.Passcodes) != 1 || after.Passcodes[0].Hash != st.Passcodes[0].Hash {
		t.Errorf("after enrollment: %+v\nbefore: %+v", after, st)
	}
	if _, ok := e.check(t, "bob", otp.Code(secret, time.Now()), time.Now(), &g); !ok {
		t.Errorf("TOTP refused after enrolling an admin account")
	}
}

func TestSealedSecretErrors(t *testing.T) {
	e := newTOTPEnv(t)
	secret, _ := e.enroll(t, "alice")
	e.enroll(t, "bob")
	now := time.Now()
	code := otp.Code(secret, now)
	good, _ := os.ReadFile(e.path)
	keyPath := TOTPKeyPath(e.state)
	goodKey, _ := os.ReadFile(keyPath)

	checkErr := func(what, wantInErr string) {
		t.Helper()
		var g otp.ReplayGuard
		kind, ok, err := CheckSecondFactor(e.s, e.state, "alice", code, now, &g)
		if err == nil || ok || kind != SecondFactorNone || !strings.Contains(err.Error(), wantInErr) {
			t.Errorf("%s: kind %v ok %v err %v; want an error containing %q", what, kind, ok, err, wantInErr)
		}
	}
	// A different totp.key.
	if err := os.WriteFile(keyPath, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	checkErr("wrong key", "does not open")
	// No totp.key at all: not created by a check.
	os.Remove(keyPath)
	checkErr("missing key", TOTPKeyFileName)
	if _, err := os.Stat(keyPath); !os.IsNotExist(err) {
		t.Errorf("a check created %s", keyPath)
	}
	// A totp.key of the wrong size.
	os.WriteFile(keyPath, goodKey[:16], 0o600)
	checkErr("short key", "has 16 bytes")
	os.WriteFile(keyPath, goodKey, 0o600)

	// bob's sealed secret copied over alice's: the user is bound in. The
	// error names the authenticator whose secret does not open.
	a, _ := ParseAccounts(e.path, good)
	aliceSealed, bobSealed := a.Lookup("alice").Authenticators[0].TOTP, a.Lookup("bob").Authenticators[0].TOTP
	if !strings.Contains(string(good), aliceSealed) || aliceSealed == bobSealed {
		t.Fatalf("alice's sealed secret %q not in the file, or bob's is the same", aliceSealed)
	}
	edited := strings.Replace(string(good), aliceSealed, bobSealed, 1)
	os.WriteFile(e.path, []byte(edited), 0o600)
	checkErr("copied secret", `account "alice", authenticator "Authenticator": the totp secret does not open`)
	// The same in a file of the old layout (the account's own totp key).
	os.WriteFile(e.path, []byte(encodeLegacy(t, a, map[string]string{"alice": bobSealed})), 0o600)
	checkErr("copied secret, old layout", "does not open")
	// And into a second authenticator of alice's: every one is checked.
	spare := "[[account.authenticator]]\nname = \"Spare\"\nadded = 2026-11-25T12:00:00Z\ntotp = \"" + bobSealed + "\"\n\n"
	os.WriteFile(e.path, []byte(strings.Replace(string(good), "[[account]]\nuser = \"bob\"", spare+"[[account]]\nuser = \"bob\"", 1)), 0o600)
	// (Only err and ok here: the kind returned with this error is
	// TestSecondFactorErrorAfterAMatch's.)
	{
		var g otp.ReplayGuard
		_, ok, err := CheckSecondFactor(e.s, e.state, "alice", code, now, &g)
		if want := `account "alice", authenticator "Spare": the totp secret does not open`; ok || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("copied secret, second authenticator: ok %v err %v; want an error containing %q", ok, err, want)
		}
	}

	// One character of the ciphertext changed (still valid base64url).
	sealed := aliceSealed
	last := sealed[len(sealed)-2]
	repl := "B"
	if last == 'B' {
		repl = "C"
	}
	tampered := sealed[:len(sealed)-2] + repl + sealed[len(sealed)-1:]
	os.WriteFile(e.path, []byte(strings.Replace(string(good), sealed, tampered, 1)), 0o600)
	checkErr("tampered secret", "does not open")

	// Renaming the account by case keeps the secret: the user is bound in
	// case-folded.
	os.WriteFile(e.path, bytes.Replace(good, []byte(`user = "alice"`), []byte(`user = "ALICE"`), 1), 0o600)
	var g otp.ReplayGuard
	if _, ok := e.check(t, "alice", code, now, &g); !ok {
		t.Errorf("code refused after the user name's case changed")
	}

	// A nil guard is a programming error, reported, not a panic.
	if _, _, err := CheckSecondFactor(e.s, e.state, "alice", code, now, nil); err == nil {
		t.Errorf("nil ReplayGuard accepted")
	}
}

// A hand edit made between two portal writes survives both.
func TestTOTPWritesKeepHandEdits(t *testing.T) {
	e := newTOTPEnv(t)
	_, codes := e.enroll(t, "alice")

	data, _ := os.ReadFile(e.path)
	header := "# Site accounts, edited by hand.\n"
	hand := header + strings.TrimPrefix(string(data), DefaultHeader) + "\n[[account]]\nuser = \"carol\"\nenabled = 2026-01-02T03:04:05Z\n"
	if err := os.WriteFile(e.path, []byte(hand), 0o600); err != nil {
		t.Fatal(err)
	}
	var g otp.ReplayGuard
	if _, ok := e.check(t, "alice", codes[0], time.Now(), &g); !ok { // a write
		t.Fatal("one-time code refused")
	}
	e.enroll(t, "dave") // another write
	got, _ := os.ReadFile(e.path)
	a, err := ParseAccounts(e.path, got)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), header) || a.Lookup("carol") == nil || a.Lookup("carol").HasTOTP() ||
		!a.Lookup("carol").Enabled.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) ||
		len(a.Lookup("alice").OneTimeCodes) != OneTimeCodeCount-1 || !a.Lookup("dave").HasTOTP() {
		t.Errorf("hand edit lost or writes missing:\n%s", got)
	}
}

// Two sign-ins racing with one one-time code: exactly one wins.
func TestOneTimeCodeRace(t *testing.T) {
	e := newTOTPEnv(t)
	_, codes := e.enroll(t, "alice")
	const n = 8
	var wg sync.WaitGroup
	wins := make([]bool, n)
	var g otp.ReplayGuard
	for i := range n {
		wg.Go(func() {
			_, ok, err := CheckSecondFactor(e.s, e.state, "alice", codes[5], time.Now(), &g)
			if err != nil {
				t.Error(err)
			}
			wins[i] = ok
		})
	}
	wg.Wait()
	won := 0
	for _, w := range wins {
		if w {
			won++
		}
	}
	if won != 1 {
		t.Errorf("%d sign-ins accepted the same one-time code, want 1", won)
	}
}

func TestEnrollTOTPRefuses(t *testing.T) {
	e := newTOTPEnv(t)
	for name, tc := range map[string]struct {
		user   string
		secret []byte
	}{
		"bad user":     {" alice", make([]byte, otp.SecretSize)},
		"short secret": {"alice", make([]byte, otp.SecretSize-1)},
		"long secret":  {"alice", make([]byte, 65)},
	} {
		if _, err := EnrollTOTP(e.s, e.state, tc.user, tc.secret); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := os.Stat(e.path); !os.IsNotExist(err) {
		t.Errorf("refused enrollments wrote the accounts file")
	}
}

func TestSecondFactorString(t *testing.T) {
	for k, want := range map[SecondFactor]string{SecondFactorNone: "none", SecondFactorTOTP: "totp", SecondFactorOneTimeCode: "one-time code"} {
		if k.String() != want {
			t.Errorf("%d: %q, want %q", k, k.String(), want)
		}
	}
}

// A key file lost while the accounts depend on it is never replaced by a
// new one: enrollment and a new passcode fail with a message that says
// how to repair it, and nothing is written.
func TestLostKeysAreNotRecreated(t *testing.T) {
	e := newTOTPEnv(t)
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnrollTOTP(e.s, e.state, "alice", secret); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(TOTPKeyPath(e.state)); err != nil {
		t.Fatal(err)
	}
	_, err = EnrollTOTP(e.s, e.state, "bob", secret)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "restore it from a backup") {
		t.Errorf("enrolling bob without totp.key: %v", err)
	}
	if _, serr := os.Stat(TOTPKeyPath(e.state)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a new totp.key was created")
	}

	if err := os.Remove(PepperPath(e.state)); err != nil {
		t.Fatal(err)
	}
	if _, err := AddPasscode(e.s, e.state, "alice", "Thunderbird"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a passcode without the pepper while one-time codes exist: %v", err)
	}
	if _, serr := os.Stat(PepperPath(e.state)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a new pepper was created")
	}
	if after, _ := os.ReadFile(e.path); !bytes.Equal(before, after) {
		t.Errorf("the accounts file changed")
	}
}

// encodeLegacy writes a as the accounts file was written before accounts
// could hold several authenticators: an account's one authenticator as
// its own totp and totp_enrolled keys. sealed replaces the secret of the
// accounts it names.
func encodeLegacy(t *testing.T, a *Accounts, sealed map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(DefaultHeader)
	for i, acct := range a.Accounts {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[[account]]\nuser = %s\nenabled = %s        # when 2FA was turned on\n", quoteTOML(acct.User), formatTime(acct.Enabled))
		switch all := acct.AllAuthenticators(); len(all) {
		case 0:
		case 1:
			secret := all[0].TOTP
			if s, ok := sealed[acct.User]; ok {
				secret = s
			}
			fmt.Fprintf(&b, "totp = %s\ntotp_enrolled = %s  # authenticator registered; totp is its secret, sealed with state_dir/totp.key\n",
				quoteTOML(secret), formatTime(all[0].Added))
		default:
			t.Fatalf("account %q has %d authenticators: the old layout holds one", acct.User, len(all))
		}
		if len(acct.OneTimeCodes) > 0 {
			b.WriteString("one_time_codes = [                    # hashes of the unused one-time codes\n")
			for _, h := range acct.OneTimeCodes {
				fmt.Fprintf(&b, "  %s,\n", quoteTOML(h))
			}
			b.WriteString("]\n")
		}
		for _, pc := range acct.Passcodes {
			fmt.Fprintf(&b, "\n[[account.passcode]]\napp = %s\ncreated = %s\nhash = %s\n", quoteTOML(pc.App), formatTime(pc.Created), quoteTOML(pc.Hash))
		}
	}
	return b.String()
}

// An account enrolled before accounts could hold several authenticators
// (its own totp and totp_enrolled keys) signs in as before, as one
// authenticator named LegacyAuthenticatorName, and the first write of the
// file moves it into an [[account.authenticator]] table, same secret,
// same ID (so its last use is kept).
func TestLegacyTOTPAccount(t *testing.T) {
	e := newTOTPEnv(t)
	secret, codes := e.enroll(t, "alice")
	a, err := LoadAccounts(e.path)
	if err != nil {
		t.Fatal(err)
	}
	au := a.Lookup("alice").Authenticators[0]
	legacy := encodeLegacy(t, a, nil)
	if err := os.WriteFile(e.path, []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(legacy, "totp_enrolled = ") || strings.Contains(legacy, "[[account.authenticator]]") {
		t.Fatalf("not the old layout:\n%s", legacy)
	}

	st := e.status(t, "alice")
	if !st.HasTOTP() || len(st.Authenticators) != 1 || st.Authenticators[0].Name != LegacyAuthenticatorName ||
		!st.Authenticators[0].Added.Equal(au.Added) || !st.TOTPEnrolled.Equal(au.Added) || st.Authenticators[0].ID != au.ID() {
		t.Fatalf("status of the old layout: %+v", st)
	}

	// A TOTP code signs in, and names the authenticator; checking it
	// writes nothing.
	var g otp.ReplayGuard
	now := time.Now()
	r, ok, err := CheckSecondFactorExcept(e.s, e.state, "alice", otp.Code(secret, now), now, &g, "")
	if err != nil || !ok || r.Kind != SecondFactorTOTP || r.Authenticator != LegacyAuthenticatorName || r.AuthenticatorID != au.ID() {
		t.Fatalf("TOTP code on the old layout: %+v %v %v", r, ok, err)
	}
	if data, _ := os.ReadFile(e.path); string(data) != legacy {
		t.Fatalf("a TOTP check rewrote the file:\n%s", data)
	}

	// A one-time code is the next write: the file is in the new layout
	// after it, and the authenticator still signs in.
	if kind, ok := e.check(t, "alice", codes[0], now, &g); !ok || kind != SecondFactorOneTimeCode {
		t.Fatalf("one-time code on the old layout: %v %v", kind, ok)
	}
	data, _ := os.ReadFile(e.path)
	want := "\n[[account.authenticator]]\nname = \"Authenticator\"\nadded = " + formatTime(au.Added) + "\ntotp = \"" + au.TOTP + "\""
	if strings.Contains(string(data), "totp_enrolled") || !strings.Contains(string(data), want) {
		t.Errorf("not rewritten in the new layout:\n%s", data)
	}
	next := now.Add(otp.Period)
	if kind, ok := e.check(t, "alice", otp.Code(secret, next), next, &g); !ok || kind != SecondFactorTOTP {
		t.Errorf("TOTP code after the rewrite: %v %v", kind, ok)
	}
	if st := e.status(t, "alice"); len(st.Authenticators) != 1 || st.Authenticators[0].ID != au.ID() || st.OneTimeCodesLeft != OneTimeCodeCount-1 {
		t.Errorf("status after the rewrite: %+v", st)
	}
}
