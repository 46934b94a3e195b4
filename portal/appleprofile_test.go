package portal_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"howett.net/plist"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/portal"
)

// appleProfileDoc is what the test reads of an Apple configuration
// profile.
type appleProfileDoc struct {
	PayloadType    string
	PayloadContent []struct {
		PayloadType                            string
		EmailAddress                           string
		IncomingMailServerHostName             string
		IncomingMailServerPortNumber           int
		IncomingMailServerUseSSL               bool
		IncomingMailServerUsername             string
		IncomingPassword                       string
		OutgoingMailServerHostName             string
		OutgoingMailServerPortNumber           int
		OutgoingMailServerUseSSL               bool
		OutgoingMailServerUsername             string
		OutgoingPasswordSameAsIncomingPassword bool
	}
}

// openAppleProfile checks that body is DER CMS SignedData signed by cert,
// and returns the plist it carries, as text and read.
func openAppleProfile(t *testing.T, body string, cert *selfsigned.Cert) (string, appleProfileDoc) {
	t.Helper()
	p7, err := pkcs7.Parse([]byte(body))
	if err != nil {
		t.Fatalf("the profile is not PKCS #7: %v", err)
	}
	if err := p7.VerifyWithChain(cert.Pool); err != nil {
		t.Fatalf("the signature does not verify against the portal's certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(cert.TLS.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if signer := p7.GetOnlySigner(); signer == nil || !signer.Equal(leaf) {
		t.Fatal("the profile is not signed by the portal's certificate")
	}
	var doc appleProfileDoc
	format, err := plist.Unmarshal(p7.Content, &doc)
	if err != nil {
		t.Fatalf("the signed content is not a plist: %v\n%s", err, p7.Content)
	}
	if format != plist.XMLFormat {
		t.Errorf("plist format %d, want XML", format)
	}
	if doc.PayloadType != "Configuration" || len(doc.PayloadContent) != 1 || doc.PayloadContent[0].PayloadType != "com.apple.mail.managed" {
		t.Fatalf("profile %+v", doc)
	}
	return string(p7.Content), doc
}

// A 2FA user downloads a signed Apple profile: a new passcode named
// iPhone (the default), limited to IMAP and SMTP, in force at once, in
// the profile with the user name and the mail host, and nowhere in the
// log.
func TestAppleProfile(t *testing.T) {
	cert := testCertificate(t)
	w := newWorld(t, withCertificate(&cert.TLS))
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.enroll()
	c.get("/account").want(http.StatusOK, `id="apple-setup"`)
	reloads := w.reloads.Load()

	r := c.post("/setup/apple", form("name", "")).want(http.StatusOK)
	for k, v := range map[string]string{
		"Content-Type":        "application/x-apple-aspen-config",
		"Content-Disposition": `attachment; filename="iPhone.mobileconfig"`,
		"Cache-Control":       "no-store",
	} {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if w.reloads.Load() != reloads+1 {
		t.Errorf("reloads: %d, want %d", w.reloads.Load(), reloads+1)
	}

	text, doc := openAppleProfile(t, r.body, cert)
	mail := doc.PayloadContent[0]
	code := mail.IncomingPassword
	if !regexp.MustCompile(`^[A-Z]{16}$`).MatchString(code) {
		t.Fatalf("IncomingPassword %q, want a passcode", code)
	}
	for _, want := range []string{code, "carol", mailHost} {
		if !strings.Contains(text, want) {
			t.Errorf("the profile lacks %q", want)
		}
	}
	if mail.EmailAddress != "carol@"+mailHost || // [users] lists no domain: the mail host's
		mail.IncomingMailServerHostName != mailHost || mail.OutgoingMailServerHostName != mailHost ||
		mail.IncomingMailServerPortNumber != 993 || mail.OutgoingMailServerPortNumber != 587 ||
		!mail.IncomingMailServerUseSSL || !mail.OutgoingMailServerUseSSL ||
		mail.IncomingMailServerUsername != "carol" || mail.OutgoingMailServerUsername != "carol" ||
		!mail.OutgoingPasswordSameAsIncomingPassword {
		t.Errorf("mail payload %+v", mail)
	}

	// The passcode is carol's "iPhone", for IMAP and SMTP only, in force.
	var pc *auth.AppPasscode
	for _, p := range w.status("carol").Passcodes {
		if p.App == "iPhone" {
			pc = &p
		}
	}
	if pc == nil {
		t.Fatalf("no passcode iPhone: %q", w.passcodeApps("carol"))
	}
	if !slices.Equal(pc.Protocols, []string{"imap", "submission"}) {
		t.Errorf("scope %q, want imap and submission", pc.Protocols)
	}
	policy := w.rt.Load().Policy
	for _, proto := range []string{"imap", "submission"} {
		if d := policy.Decide(auth.Attempt{User: "carol", Secret: code, Protocol: proto}); d.Kind != auth.Passcode || d.App != "iPhone" {
			t.Errorf("%s with the profile's passcode: %+v", proto, d)
		}
	}
	if d := policy.Decide(auth.Attempt{User: "carol", Secret: code, Protocol: "pop3"}); d.Kind == auth.Passcode {
		t.Errorf("pop3 with the profile's passcode: %+v", d)
	}
	c.get("/account").want(http.StatusOK, `<tr data-app="iPhone">`, "IMAP, SMTP").lacks(code, auth.FormatPasscode(code))

	w.wantLog("passcode added for an Apple profile", "app=iPhone")
	noSecrets(t, w.logs.String(), code, auth.FormatPasscode(code), carolPW)
}

// The form's name names the passcode (trimmed) and the file (ASCII
// letters, digits and hyphens only).
func TestAppleProfileNames(t *testing.T) {
	cert := testCertificate(t)
	w := newWorld(t, withCertificate(&cert.TLS))
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.enroll()
	var made []string
	for _, tc := range []struct{ name, app, file string }{
		{"", "iPhone", "iPhone.mobileconfig"},
		{"Mac mini", "Mac mini", "Mac-mini.mobileconfig"},
		{"  iPad Pro  ", "iPad Pro", "iPad-Pro.mobileconfig"},
		{"仕事用のiPad", "仕事用のiPad", "iPad.mobileconfig"},
		{"スマートフォン", "スマートフォン", "mail.mobileconfig"},
		{`Bob's "Mac"; x=1`, `Bob's "Mac"; x=1`, "Bobs-Mac-x1.mobileconfig"},
	} {
		c.get("/account").want(http.StatusOK)
		r := c.post("/setup/apple", form("name", tc.name)).want(http.StatusOK)
		if got, want := r.header.Get("Content-Disposition"), `attachment; filename="`+tc.file+`"`; got != want {
			t.Errorf("name %q: Content-Disposition %q, want %q", tc.name, got, want)
		}
		_, doc := openAppleProfile(t, r.body, cert)
		d := w.rt.Load().Policy.Decide(auth.Attempt{User: "carol", Secret: doc.PayloadContent[0].IncomingPassword, Protocol: "imap"})
		if d.Kind != auth.Passcode || d.App != tc.app {
			t.Errorf("name %q: the profile's passcode: %+v, want app %q", tc.name, d, tc.app)
		}
		made = append(made, tc.app)
	}
	if got := w.passcodeApps("carol"); !slices.Equal(got, made) {
		t.Errorf("passcodes %q, want %q", got, made)
	}
}

// ed25519Certificate is a certificate whose key cannot sign a profile
// (Apple takes RSA and ECDSA).
func ed25519Certificate(t *testing.T) *tls.Certificate {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ed25519"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// A profile that cannot be made, or may not be, leaves no passcode behind:
// the reason on the account page, 503 without a certificate, 403 without
// the form's token.
func TestAppleProfileRefused(t *testing.T) {
	good := testCertificate(t)
	other := testCertificate(t)
	mismatched := &tls.Certificate{Certificate: good.TLS.Certificate, PrivateKey: other.TLS.PrivateKey}
	const (
		unavailableText = "The profile cannot be made right now. Ask your administrator, or set the app up by hand with the settings below."
		need2FAText     = "Turn on two-factor authentication first."
		existsText      = "There is already a passcode named iPhone. Choose another name, or delete that one first."
		badNameText     = "Enter a name of up to 64 characters."
	)
	for _, tc := range []struct {
		name     string
		options  []func(*portal.Options)
		config   []string // editConfig's old, new pairs
		noTwoFA  bool     // carol does not enroll
		existing string   // a passcode carol makes first
		form     url.Values
		status   int    // 303: back to the account page
		error    string // the account page's #error then
	}{
		{name: "no CSRF token", options: certOption(good), form: form("name", "iPhone", "csrf", "forged"), status: http.StatusForbidden},
		{name: "no token at all", options: certOption(good), form: form("name", "iPhone", "csrf", ""), status: http.StatusForbidden},
		{name: "name taken", options: certOption(good), existing: "iPhone", form: form("name", "iphone"), status: http.StatusSeeOther, error: existsText},
		{name: "default name taken", options: certOption(good), existing: "iPhone", form: form("name", ""), status: http.StatusSeeOther, error: existsText},
		{name: "name too long", options: certOption(good), form: form("name", strings.Repeat("x", 65)), status: http.StatusSeeOther, error: badNameText},
		{name: "2FA off", options: certOption(good), noTwoFA: true, form: form("name", "iPhone"), status: http.StatusSeeOther, error: need2FAText},
		{name: "no submission listener", options: certOption(good), config: []string{submissionListener, ""},
			form: form("name", "iPhone"), status: http.StatusSeeOther, error: unavailableText},
		{name: "submission only without TLS", options: certOption(good),
			config: []string{submissionListener, "[[listener]]\nprotocol = \"submission\"\naddress = \"127.0.0.1:587\"\ntls = \"none\"\n\n"},
			form:   form("name", "iPhone"), status: http.StatusSeeOther, error: unavailableText},
		{name: "no IMAP listener", options: certOption(good), config: []string{imapListeners, ""},
			form: form("name", "iPhone"), status: http.StatusSeeOther, error: unavailableText},
		{name: "no Certificate option", form: form("name", "iPhone"), status: http.StatusServiceUnavailable},
		{name: "no certificate in force", options: []func(*portal.Options){withCertificate(nil)}, form: form("name", "iPhone"), status: http.StatusServiceUnavailable},
		{name: "a key that cannot sign", options: []func(*portal.Options){withCertificate(ed25519Certificate(t))},
			form: form("name", "iPhone"), status: http.StatusSeeOther, error: unavailableText},
		{name: "a key not the certificate's", options: []func(*portal.Options){withCertificate(mismatched)},
			form: form("name", "iPhone"), status: http.StatusSeeOther, error: unavailableText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, tc.options...)
			if tc.config != nil {
				w.editConfig(tc.config...)
			}
			c := w.client(inside)
			c.signIn("carol", carolPW, "").wantRedirect("/account")
			if !tc.noTwoFA {
				c.enroll()
			}
			if tc.existing != "" {
				c.get("/account")
				c.post("/passcodes/add", form("app", tc.existing)).wantRedirect("/passcodes/new")
			}
			c.get("/account").want(http.StatusOK)
			before := w.passcodeApps("carol")
			reloads := w.reloads.Load()

			r := c.post("/setup/apple", tc.form)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d\n%s", r.status, tc.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); strings.Contains(ct, "apple") || r.header.Get("Content-Disposition") != "" {
				t.Fatalf("a profile was sent: %q", ct)
			}
			if tc.status == http.StatusSeeOther {
				r.wantRedirect("/account")
				if got := c.get("/account").text("error"); got != tc.error {
					t.Errorf("#error = %q, want %q", got, tc.error)
				}
			}
			if tc.status == http.StatusServiceUnavailable {
				r.want(http.StatusServiceUnavailable, "Temporarily unavailable")
			}
			if got := w.passcodeApps("carol"); !slices.Equal(got, before) {
				t.Errorf("passcodes %q, want %q", got, before)
			}
			if w.reloads.Load() != reloads {
				t.Errorf("%d reloads", w.reloads.Load()-reloads)
			}
			noSecrets(t, w.logs.String(), carolPW)
		})
	}
}

// certOption is the options of a portal with cert.
func certOption(cert *selfsigned.Cert) []func(*portal.Options) {
	return []func(*portal.Options){withCertificate(&cert.TLS)}
}

// A session that signed in with the password alone, before the account
// had 2FA, is sent to sign in again and gets no profile.
func TestAppleProfilePasswordOnlySession(t *testing.T) {
	cert := testCertificate(t)
	w := newWorld(t, withCertificate(&cert.TLS))
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.get("/account").want(http.StatusOK)

	// 2FA turned on by another way (another node, the CLI).
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	rt := w.rt.Load()
	if _, err := auth.EnrollTOTP(auth.OpenStore(rt.Config.Accounts), rt.Config.StateDir, "carol", secret); err != nil {
		t.Fatal(err)
	}
	c.post("/setup/apple", form("name", "iPhone")).wantRedirect("/signin")
	if apps := w.passcodeApps("carol"); len(apps) != 0 {
		t.Errorf("passcodes %q", apps)
	}
	c.get("/account").wantRedirect("/signin")
	w.wantLog("session ended: signed in without a second factor")
}

// The account page offers the Apple profile only when 2FA is on (a
// passcode needs it), in both languages.
func TestAppleSetupOnAccountPage(t *testing.T) {
	for _, tc := range []struct{ lang, title, button string }{
		{"en", "Set up an iPhone, iPad or Mac", "Download the profile"},
		{"ja", "iPhone・iPad・Mac を設定する", "プロファイルをダウンロード"},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			w := newWorld(t, withCertificate(&testCertificate(t).TLS))
			c := w.client(inside)
			c.lang = tc.lang
			c.signIn("carol", carolPW, "").wantRedirect("/account")
			c.get("/account").want(http.StatusOK, `id="client-settings"`).lacks(`id="apple-setup"`, `action="/setup/apple"`, tc.title)
			c.enroll()
			page := c.get("/account").want(http.StatusOK, `<section id="apple-setup">`, `<form method="post" action="/setup/apple"`,
				`name="name"`, tc.title, tc.button)
			section := page.body[strings.Index(page.body, `<section id="apple-setup">`):]
			section = section[:strings.Index(section, "</section>")]
			if !strings.Contains(section, `name="csrf" value="`+c.csrf+`"`) {
				t.Error("the Apple form lacks the session's CSRF token")
			}
		})
	}
}

// With [users] domains, the documents name the account by its address at
// the first domain, and the profile's passcode logs in under either name.
func TestMailSetupWithDomains(t *testing.T) {
	cert := testCertificate(t)
	w := newWorld(t, withCertificate(&cert.TLS))
	w.editConfig("[portal]", "[users]\ndomains = [\"example.edu\"]\n\n[portal]")

	r := w.mailApp(http.MethodGet, "autoconfig.example.edu", "/mail/config-v1.1.xml", "", "").want(http.StatusOK,
		`<emailProvider id="example.edu">`, "<domain>example.edu</domain>", "<username>%EMAILADDRESS%</username>")
	if in, _ := autoconfigServers(t, r.body); len(in) == 0 || in[0].Host != mailHost {
		t.Errorf("incoming %v", in)
	}
	r = w.mailApp(http.MethodPost, "autodiscover.example.edu", "/autodiscover/autodiscover.xml", "text/xml", outlookRequest("carol@example.edu")).want(http.StatusOK)
	if _, logins := autodiscoverServers(t, r.body); len(logins) == 0 || logins[0] != "carol@example.edu" {
		t.Errorf("LoginName %q, want the address", logins)
	}

	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.enroll()
	r = c.post("/setup/apple", form("name", "iPhone")).want(http.StatusOK)
	_, doc := openAppleProfile(t, r.body, cert)
	mail := doc.PayloadContent[0]
	if mail.EmailAddress != "carol@example.edu" {
		t.Errorf("EmailAddress %q, want carol@example.edu", mail.EmailAddress)
	}
	// The proxy folds the name the app sends ([users]) before the policy
	// decides.
	rt := w.rt.Load()
	for _, user := range []string{mail.IncomingMailServerUsername, mail.OutgoingMailServerUsername, "carol", "carol@example.edu"} {
		name, err := rt.Config.Users.Names.Canonical(user)
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		d := rt.Policy.Decide(auth.Attempt{User: name, Secret: mail.IncomingPassword, Protocol: "imap"})
		if d.Kind != auth.Passcode || d.App != "iPhone" {
			t.Errorf("%s with the profile's passcode: %+v", user, d)
		}
	}
}
