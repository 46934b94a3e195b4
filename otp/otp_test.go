package otp

import (
	"bytes"
	"image/png"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boombuler/barcode/qr"
)

// rfcSecret is the SHA-1 seed of RFC 6238 Appendix B.
var rfcSecret = []byte("12345678901234567890")

func TestRFC6238Vectors(t *testing.T) {
	// RFC 6238 Appendix B, SHA-1 column; the 6-digit code is the last six
	// of the 8-digit one (the truncation is mod 10^digits).
	for _, v := range []struct {
		unix  int64
		step  int64
		code8 string
	}{
		{59, 0x1, "94287082"},
		{1111111109, 0x23523EC, "07081804"},
		{1111111111, 0x23523ED, "14050471"},
		{1234567890, 0x273EF07, "89005924"},
		{2000000000, 0x3F940AA, "69279037"},
		{20000000000, 0x27BC86AA, "65353130"},
	} {
		at := time.Unix(v.unix, 0)
		want := v.code8[2:]
		if got := Step(at); got != v.step {
			t.Errorf("Step(%d) = %#x, want %#x", v.unix, got, v.step)
		}
		if got := Code(rfcSecret, at); got != want {
			t.Errorf("Code at %d = %q, want %q", v.unix, got, want)
		}
		if step, ok := Verify(rfcSecret, want, at); !ok || step != v.step {
			t.Errorf("Verify(%q) at %d = %#x, %v; want %#x, true", want, v.unix, step, ok, v.step)
		}
	}
}

func TestVerifySkew(t *testing.T) {
	now := time.Unix(1111111111, 0)
	cur := Step(now)
	for d := int64(-3); d <= 3; d++ {
		code := Code(rfcSecret, now.Add(time.Duration(d)*Period))
		step, ok := Verify(rfcSecret, code, now)
		if want := d >= -Skew && d <= Skew; ok != want {
			t.Errorf("code of step %+d: ok = %v, want %v", d, ok, want)
		} else if ok && step != cur+d {
			t.Errorf("code of step %+d matched step %d, want %d", d, step, cur+d)
		}
	}
}

func TestVerifyInput(t *testing.T) {
	now := time.Unix(1234567890, 0)
	for code, want := range map[string]bool{
		"005924":                            true,
		"005 924":                           true,
		" 005924\t":                         true,
		"005925":                            false,
		"05924":                             false,
		"0059240":                           false,
		"００５９２４":                            false, // full-width digits are not digits here
		"":                                  false,
		"xxxxxx":                            false,
		"005924" + "\n":                     false,
		strings.Repeat(" ", 100) + "005924": false,
	} {
		if _, ok := Verify(rfcSecret, code, now); ok != want {
			t.Errorf("Verify(%q) = %v, want %v", code, ok, want)
		}
	}
}

func TestKeyFormat(t *testing.T) {
	secret := []byte{0x00, 0x44, 0x32, 0x14, 0xC7, 0x42, 0x54, 0xB6, 0x35, 0xCF}
	key := FormatKey(secret)
	if key != "ABCD EFGH IJKL MNOP" {
		t.Errorf("FormatKey = %q", key)
	}
	for _, in := range []string{key, "abcdefghijklmnop", "abcd-efgh-ijkl-mnop", " ABCD\tEFGH IJKL MNOP "} {
		got, err := ParseKey(in)
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("ParseKey(%q) = %x, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "   ", "ABCD EFGH IJKL MNO1", "ABCD!"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	for range 50 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		k := FormatKey(s)
		if len(s) != SecretSize || len(k) != 19 || strings.Count(k, " ") != 3 {
			t.Fatalf("secret %d bytes, key %q", len(s), k)
		}
		back, err := ParseKey(k)
		if err != nil || !bytes.Equal(back, s) {
			t.Fatalf("ParseKey(FormatKey(%x)) = %x, %v", s, back, err)
		}
	}
	a, _ := NewSecret()
	b, _ := NewSecret()
	if bytes.Equal(a, b) {
		t.Errorf("two secrets are equal")
	}
}

func TestURI(t *testing.T) {
	secret := []byte{0x00, 0x44, 0x32, 0x14, 0xC7, 0x42, 0x54, 0xB6, 0x35, 0xCF}
	for _, tc := range []struct{ issuer, account, want string }{
		{"kanmon", "alice", "otpauth://totp/kanmon:alice?secret=ABCDEFGHIJKLMNOP&issuer=kanmon&algorithm=SHA1&digits=6&period=30"},
		{"Example University", "alice@example.edu",
			"otpauth://totp/Example%20University:alice@example.edu?secret=ABCDEFGHIJKLMNOP&issuer=Example%20University&algorithm=SHA1&digits=6&period=30"},
		{"A:B&C=D+E?#/", "x:y z",
			"otpauth://totp/A%3AB%26C%3DD%2BE%3F%23%2F:x%3Ay%20z?secret=ABCDEFGHIJKLMNOP&issuer=A%3AB%26C%3DD%2BE%3F%23%2F&algorithm=SHA1&digits=6&period=30"},
		{"関門大学", "太郎", "otpauth://totp/%E9%96%A2%E9%96%80%E5%A4%A7%E5%AD%A6:%E5%A4%AA%E9%83%8E?secret=ABCDEFGHIJKLMNOP&issuer=%E9%96%A2%E9%96%80%E5%A4%A7%E5%AD%A6&algorithm=SHA1&digits=6&period=30"},
		{"", "alice", "otpauth://totp/alice?secret=ABCDEFGHIJKLMNOP&algorithm=SHA1&digits=6&period=30"},
	} {
		if got := URI(tc.issuer, tc.account, secret); got != tc.want {
			t.Errorf("URI(%q, %q) =\n  %s\nwant\n  %s", tc.issuer, tc.account, got, tc.want)
		}
	}
}

func TestQRPNG(t *testing.T) {
	uri := URI("Example University", "alice@example.edu", []byte("0123456789"))
	data, err := QRPNG(uri, 256)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Fatalf("bounds %v, want 256×256", b)
	}
	// Read the modules back from the pixels and compare with the QR
	// encoder's own matrix: whole-pixel modules, centred, quiet zone white.
	code, err := qr.Encode(uri, qr.M, qr.Auto)
	if err != nil {
		t.Fatal(err)
	}
	n := code.Bounds().Dx()
	scale := 256 / (n + 2*QuietZone)
	off := (256 - n*scale) / 2
	if off < QuietZone*scale {
		t.Fatalf("quiet zone %d px, want at least %d", off, QuietZone*scale)
	}
	dark := func(x, y int) bool { r, _, _, _ := img.At(x, y).RGBA(); return r == 0 }
	for y := range 256 {
		for x := range 256 {
			mx, my := (x-off)/scale, (y-off)/scale
			want := false
			if x >= off && y >= off && mx < n && my < n {
				r, _, _, _ := code.At(mx, my).RGBA()
				want = r == 0
			}
			if dark(x, y) != want {
				t.Fatalf("pixel (%d,%d) dark = %v, want %v", x, y, dark(x, y), want)
			}
		}
	}
	if _, err := QRPNG(uri, 20); err == nil {
		t.Errorf("a 20-pixel QR code was accepted")
	}
}

func TestReplayGuard(t *testing.T) {
	var g ReplayGuard
	steps := []struct {
		user string
		step int64
		want bool
	}{
		{"alice", 100, true},
		{"alice", 100, false}, // the same code again
		{"ALICE", 100, false}, // case-folded
		{"alice", 99, false},  // an older code after a newer one
		{"bob", 100, true},    // another user is independent
		{"Alice", 101, true},  // the next step
		{"alice", 101, false},
	}
	for _, s := range steps {
		if got := g.Accept(s.user, s.step); got != s.want {
			t.Errorf("Accept(%q, %d) = %v, want %v", s.user, s.step, got, s.want)
		}
	}
}

func TestReplayGuardPrunes(t *testing.T) {
	var g ReplayGuard
	for i := range 3 * minPrune {
		if !g.Accept(strings.Repeat("u", 1+i%7)+string(rune('a'+i%26))+time.Duration(i).String(), int64(i/100)) {
			t.Fatalf("user %d refused", i)
		}
	}
	if n := len(g.last); n > 2*minPrune {
		t.Errorf("%d users remembered after pruning", n)
	}
	// A user pruned long ago is simply accepted again; a recent one is not.
	g.Accept("recent", 1000)
	if g.Accept("recent", 1000) {
		t.Errorf("recent step accepted twice")
	}
}

// TestOathtool checks Verify against an independent authenticator: the
// codes that oathtool (OATH Toolkit, Debian package oathtool) computes
// from the key as the user sees it, grouped, at several times and now.
func TestOathtool(t *testing.T) {
	bin, err := exec.LookPath("oathtool")
	if err != nil {
		const msg = "oathtool not found in PATH; install it with: apt-get install oathtool (scripts/test-deps.sh does)"
		if inCI() {
			t.Fatalf("%s (CI=true, so this is a failure, not a skip)", msg)
		}
		t.Skip(msg)
	}
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	key := FormatKey(secret)
	now := time.Now()
	for _, at := range []time.Time{time.Unix(59, 0), time.Unix(1111111109, 0), time.Unix(2000000000, 0), now} {
		out, err := exec.Command(bin, "--totp", "-b", key, "--now", "@"+strconv.FormatInt(at.Unix(), 10)).CombinedOutput()
		if err != nil {
			t.Fatalf("oathtool: %v: %s", err, out)
		}
		code := strings.TrimSpace(string(out))
		if step, ok := Verify(secret, code, at); !ok || step != Step(at) {
			t.Errorf("oathtool's code %q at %d: Verify = %d, %v; want %d, true", code, at.Unix(), step, ok, Step(at))
		}
	}
	// And with its own clock, as a phone would.
	out, err := exec.Command(bin, "--totp", "-b", key).CombinedOutput()
	if err != nil {
		t.Fatalf("oathtool: %v: %s", err, out)
	}
	if _, ok := Verify(secret, strings.TrimSpace(string(out)), time.Now()); !ok {
		t.Errorf("oathtool's current code %q refused", strings.TrimSpace(string(out)))
	}
}

// inCI reports whether the environment says this is a CI run, as
// internal/dovecottest does: then a missing tool fails the test.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}
