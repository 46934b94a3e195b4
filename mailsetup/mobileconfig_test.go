package mailsetup

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"howett.net/plist"

	"github.com/kanmon-mail/kanmon/config"
)

// needTool returns the path of an external program, skipping the test
// when it is missing on a developer's machine; in CI it must be there.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not in PATH, and CI is set: install it", name)
		}
		t.Skipf("%s not in PATH", name)
	}
	return path
}

// testChain is a root CA, an intermediate and a TLS server leaf, as a
// public CA issues them to the portal.
type testChain struct {
	rootPEM []byte
	cert    tls.Certificate
}

func newTestChain(t *testing.T, leafKey crypto.Signer) testChain {
	t.Helper()
	now := time.Now()
	issue := func(tmpl, parent *x509.Certificate, pub crypto.PublicKey, priv crypto.Signer) *x509.Certificate {
		t.Helper()
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Root CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ca := issue(caTmpl, caTmpl, caKey.Public(), caKey)
	midKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mid := issue(&x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Test Intermediate CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
	}, ca, midKey.Public(), caKey)
	leaf := issue(&x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "portal.example.edu"},
		DNSNames:  []string{"portal.example.edu", "autoconfig.example.edu", "autodiscover.example.edu"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, mid, leafKey.Public(), midKey)
	return testChain{
		rootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		cert:    tls.Certificate{Certificate: [][]byte{leaf.Raw, mid.Raw}, PrivateKey: leafKey},
	}
}

func testProfile(t *testing.T) Profile {
	return Profile{
		Settings:    fullSettings(t),
		Email:       "alice@example.edu",
		Passcode:    "ABCDEFGHIJKLMNOP",
		AccountName: "iPhone",
		FullName:    "Alice Example",
	}
}

func TestSignedProfileVerifies(t *testing.T) {
	openssl := needTool(t, "openssl")
	python := needTool(t, "python3")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{{"rsa", rsaKey}, {"ecdsa", ecKey}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			chain := newTestChain(t, tc.key)
			data, err := MobileConfig(testProfile(t))
			if err != nil {
				t.Fatal(err)
			}
			signed, err := SignProfile(data, &chain.cert)
			if err != nil {
				t.Fatal(err)
			}
			profile := filepath.Join(dir, "profile.mobileconfig")
			caFile := filepath.Join(dir, "ca.pem")
			payload := filepath.Join(dir, "payload.plist")
			if err := os.WriteFile(profile, signed, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(caFile, chain.rootPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			// Only the root is given: the intermediate must come from the
			// profile. "-purpose any": the signer is a TLS server
			// certificate, as a portal's is, which iOS accepts but
			// openssl's default S/MIME purpose check does not.
			cmd := exec.Command(openssl, "smime", "-verify", "-inform", "DER", "-in", profile,
				"-CAfile", caFile, "-purpose", "any", "-out", payload)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("openssl smime -verify: %v\n%s", err, out)
			}
			got, err := os.ReadFile(payload)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("verified content differs from the profile")
			}
			const check = `
import plistlib, sys
d = plistlib.load(open(sys.argv[1], "rb"))
assert d["PayloadType"] == "Configuration", d["PayloadType"]
assert d["PayloadVersion"] == 1
[m] = d["PayloadContent"]
want = {
    "PayloadType": "com.apple.mail.managed",
    "EmailAccountType": "EmailTypeIMAP",
    "EmailAddress": "alice@example.edu",
    "EmailAccountName": "Alice Example",
    "IncomingMailServerHostName": "mail.example.edu",
    "IncomingMailServerPortNumber": 993,
    "IncomingMailServerUseSSL": True,
    "IncomingMailServerUsername": "alice@example.edu",
    "IncomingMailServerAuthentication": "EmailAuthPassword",
    "IncomingPassword": "ABCDEFGHIJKLMNOP",
    "OutgoingMailServerHostName": "mail.example.edu",
    "OutgoingMailServerPortNumber": 465,
    "OutgoingMailServerUseSSL": True,
    "OutgoingMailServerUsername": "alice@example.edu",
    "OutgoingPasswordSameAsIncomingPassword": True,
    "PreventMove": False,
}
for k, v in want.items():
    assert m.get(k) == v, (k, m.get(k), v)
assert m["PayloadUUID"] != d["PayloadUUID"]
assert m["PayloadIdentifier"].startswith(d["PayloadIdentifier"] + ".")
assert d["PayloadIdentifier"].startswith("edu.example.mail.")
print("ok")
`
			out, err := exec.Command(python, "-c", check, payload).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "ok" {
				t.Fatalf("python3 plistlib check: %v\n%s", err, out)
			}
		})
	}
}

// decodeProfile reads a profile back with the plist library.
func decodeProfile(t *testing.T, data []byte) (top map[string]any, mail map[string]any) {
	t.Helper()
	if _, err := plist.Unmarshal(data, &top); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	content, _ := top["PayloadContent"].([]any)
	if len(content) != 1 {
		t.Fatalf("PayloadContent = %v", top["PayloadContent"])
	}
	mail, _ = content[0].(map[string]any)
	return top, mail
}

func TestMobileConfigChoices(t *testing.T) {
	s := Settings{Host: "192.0.2.1", Domain: "example.org", Listeners: []Listener{
		{config.ProtocolIMAP, 143, config.TLSStartTLS},
		{config.ProtocolIMAP, 1143, config.TLSNone},
		{config.ProtocolSubmission, 587, config.TLSStartTLS},
	}}
	data, err := MobileConfig(Profile{Settings: s, Email: "bob@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	top, mail := decodeProfile(t, data)
	for k, want := range map[string]any{
		"IncomingMailServerPortNumber": uint64(143),
		"OutgoingMailServerPortNumber": uint64(587),
		"IncomingMailServerUsername":   "bob", // local part: no [users] domains
		"IncomingMailServerUseSSL":     true,
	} {
		if mail[k] != want {
			t.Errorf("%s = %#v, want %#v", k, mail[k], want)
		}
	}
	for _, k := range []string{"IncomingPassword", "EmailAccountName"} {
		if _, ok := mail[k]; ok {
			t.Errorf("%s present; the device should ask for it", k)
		}
	}
	if id, _ := top["PayloadIdentifier"].(string); !strings.HasPrefix(id, "org.example.mailsetup.") {
		t.Errorf("PayloadIdentifier %q: want the domain reversed for an IP host", id)
	}
	uuid := regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)
	for _, u := range []any{top["PayloadUUID"], mail["PayloadUUID"]} {
		if s, _ := u.(string); !uuid.MatchString(s) {
			t.Errorf("PayloadUUID %q is not a random UUID", s)
		}
	}
	again, err := MobileConfig(Profile{Settings: s, Email: "bob@example.org", User: "bob42", Identifier: "org.example"})
	if err != nil {
		t.Fatal(err)
	}
	top2, mail2 := decodeProfile(t, again)
	if top2["PayloadUUID"] == top["PayloadUUID"] {
		t.Error("UUID repeated")
	}
	if mail2["IncomingMailServerUsername"] != "bob42" || mail2["OutgoingMailServerUsername"] != "bob42" {
		t.Errorf("User not used: %v", mail2["IncomingMailServerUsername"])
	}
	if top2["PayloadIdentifier"] != top["PayloadIdentifier"] {
		t.Errorf("identifier %v != %v: a new profile would not replace the old one", top2["PayloadIdentifier"], top["PayloadIdentifier"])
	}
}

func TestMobileConfigErrors(t *testing.T) {
	imap := Listener{config.ProtocolIMAP, 993, config.TLSImplicit}
	sub := Listener{config.ProtocolSubmission, 465, config.TLSImplicit}
	for _, tc := range []struct {
		name string
		p    Profile
		is   error
	}{
		{"no imap", Profile{Settings: Settings{Host: "h", Listeners: []Listener{sub, {config.ProtocolPOP3, 995, config.TLSImplicit}}}, Email: "a@example.edu"}, ErrNoListener},
		{"no submission", Profile{Settings: Settings{Host: "h", Listeners: []Listener{imap}}, Email: "a@example.edu"}, ErrNoListener},
		{"plaintext only", Profile{Settings: Settings{Host: "h", Listeners: []Listener{{config.ProtocolIMAP, 143, config.TLSNone}, sub}}, Email: "a@example.edu"}, ErrNoListener},
		{"bad email", Profile{Settings: Settings{Host: "h", Listeners: []Listener{imap, sub}}, Email: "a"}, nil},
		{"bad identifier", Profile{Settings: Settings{Host: "h", Listeners: []Listener{imap, sub}}, Email: "a@example.edu", Identifier: "edu..example"}, nil},
		{"no host", Profile{Settings: Settings{Listeners: []Listener{imap, sub}}, Email: "a@example.edu"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MobileConfig(tc.p)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("MobileConfig() = %v, want an error (%v)", err, tc.is)
			}
		})
	}
}

func TestSignProfileErrors(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain := newTestChain(t, ecKey)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"nil", nil},
		{"empty", &tls.Certificate{}},
		{"garbage", &tls.Certificate{Certificate: [][]byte{[]byte("x")}, PrivateKey: ecKey}},
		{"wrong key", &tls.Certificate{Certificate: chain.cert.Certificate, PrivateKey: other}},
		{"ed25519", &tls.Certificate{Certificate: chain.cert.Certificate, PrivateKey: edKey}},
		{"bad intermediate", &tls.Certificate{Certificate: [][]byte{chain.cert.Certificate[0], []byte("x")}, PrivateKey: ecKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := SignProfile([]byte("<plist/>"), tc.cert); err == nil {
				t.Error("SignProfile() succeeded")
			}
		})
	}
}
