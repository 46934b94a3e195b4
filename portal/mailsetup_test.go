package portal_test

// One-step mail app setup (issue 17) through the portal: the public
// autoconfig and autodiscover documents, served before the portal's own
// pages, and the signed Apple profile a signed-in 2FA user downloads,
// which carries a new app passcode.

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/xml"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
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

// withCertificate gives the portal cert to sign Apple profiles with.
func withCertificate(cert *tls.Certificate) func(*portal.Options) {
	return func(o *portal.Options) { o.Certificate = func() *tls.Certificate { return cert } }
}

// testCertificate makes a self-signed ECDSA certificate for the portal.
func testCertificate(t *testing.T) *selfsigned.Cert {
	t.Helper()
	c, err := selfsigned.New("portal.example.edu")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// editConfig rewrites the world's config file (each old text, which must
// be there, replaced by its new one) and reloads it.
func (w *world) editConfig(oldNew ...string) {
	w.t.Helper()
	data, err := os.ReadFile(w.cfgPath)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := string(data)
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(cfg, oldNew[i]) {
			w.t.Fatalf("the config lacks %q", oldNew[i])
		}
		cfg = strings.Replace(cfg, oldNew[i], oldNew[i+1], 1)
	}
	if err := os.WriteFile(w.cfgPath, []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
	if err := w.reload(); err != nil {
		w.t.Fatal(err)
	}
}

// The world config's listeners, as editConfig finds them.
const (
	imapListeners = "[[listener]]\nprotocol = \"imap\"\naddress = \"0.0.0.0:993\"\ntls = \"implicit\"\n\n" +
		"[[listener]]\nprotocol = \"imap\"\naddress = \"0.0.0.0:143\"\ntls = \"starttls\"\n\n"
	submissionListener = "[[listener]]\nprotocol = \"submission\"\naddress = \"0.0.0.0:587\"\ntls = \"starttls\"\n\n"
	// plaintextListeners are loopback listeners without TLS (for a load
	// balancer), never to be advertised.
	plaintextListeners = "[[listener]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1143\"\ntls = \"none\"\n\n" +
		"[[listener]]\nprotocol = \"submission\"\naddress = \"127.0.0.1:1587\"\ntls = \"none\"\n\n"
	backendSection = "[backend.imap]"
)

// passcodeApps are the names of user's app passcodes, in file order.
func (w *world) passcodeApps(user string) []string {
	w.t.Helper()
	var out []string
	for _, pc := range w.status(user).Passcodes {
		out = append(out, pc.App)
	}
	return out
}

// mailApp sends a request as a mail app does: to the name the app looked
// up (host), with no cookie, from outside the campus.
func (w *world) mailApp(method, host, path, contentType, body string, header ...string) *response {
	w.t.Helper()
	req := httptest.NewRequest(method, "https://"+host+path, strings.NewReader(body))
	req.RemoteAddr = outside + ":52000"
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	w.srv.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return &response{t: w.t, req: method + " " + host + path, status: res.StatusCode, header: res.Header, body: string(b), set: res.Cookies()}
}

// outlookRequest is the body Outlook posts to autodiscover.
func outlookRequest(email string) string {
	return `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>` + email + `</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
`
}

// advertised is one server of either document: its type, host, port and
// security as the document names them.
type advertised struct {
	Type, Host string
	Port       int
	Security   string
}

// autoconfigServers reads the servers of a Thunderbird autoconfig file.
func autoconfigServers(t *testing.T, body string) (incoming, outgoing []advertised) {
	t.Helper()
	type server struct {
		Type       string `xml:"type,attr"`
		Hostname   string `xml:"hostname"`
		Port       int    `xml:"port"`
		SocketType string `xml:"socketType"`
	}
	var doc struct {
		XMLName  xml.Name `xml:"clientConfig"`
		Provider struct {
			Incoming []server `xml:"incomingServer"`
			Outgoing []server `xml:"outgoingServer"`
		} `xml:"emailProvider"`
	}
	if err := xml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("autoconfig: %v\n%s", err, body)
	}
	for _, s := range doc.Provider.Incoming {
		incoming = append(incoming, advertised{s.Type, s.Hostname, s.Port, s.SocketType})
	}
	for _, s := range doc.Provider.Outgoing {
		outgoing = append(outgoing, advertised{s.Type, s.Hostname, s.Port, s.SocketType})
	}
	return incoming, outgoing
}

// autodiscoverServers reads the protocols of an Outlook autodiscover
// answer, with their login name.
func autodiscoverServers(t *testing.T, body string) (servers []advertised, logins []string) {
	t.Helper()
	var doc struct {
		XMLName  xml.Name `xml:"Autodiscover"`
		Response struct {
			Account struct {
				Protocols []struct {
					Type       string `xml:"Type"`
					Server     string `xml:"Server"`
					Port       int    `xml:"Port"`
					LoginName  string `xml:"LoginName"`
					Encryption string `xml:"Encryption"`
				} `xml:"Protocol"`
			} `xml:"Account"`
		} `xml:"Response"`
	}
	if err := xml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("autodiscover: %v\n%s", err, body)
	}
	for _, p := range doc.Response.Account.Protocols {
		servers = append(servers, advertised{p.Type, p.Server, p.Port, p.Encryption})
		logins = append(logins, p.LoginName)
	}
	return servers, logins
}

// wantPortalHeaders checks the security headers every portal answer
// carries.
func wantPortalHeaders(t *testing.T, r *response) {
	t.Helper()
	for k, v := range map[string]string{
		"Content-Security-Policy":   "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":    "nosniff",
		"X-Frame-Options":           "DENY",
		"Strict-Transport-Security": "max-age=31536000",
	} {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", r.req, k, got, v)
		}
	}
}

// Thunderbird's autoconfig file, at both its paths, whatever name the app
// asked (autoconfig.<domain> here): the mail host of [portal] mail_host,
// only the listeners with TLS, with no session and no cookie, and the
// portal's security headers.
func TestAutoconfigThroughPortal(t *testing.T) {
	w := newWorld(t)
	w.editConfig(backendSection, plaintextListeners+backendSection)
	wantIncoming := []advertised{
		{"imap", mailHost, 993, "SSL"},
		{"imap", mailHost, 143, "STARTTLS"},
		{"pop3", mailHost, 995, "SSL"},
	}
	wantOutgoing := []advertised{{"smtp", mailHost, 587, "STARTTLS"}}

	for _, tc := range []struct{ name, host, path string }{
		{"autoconfig host", "autoconfig.example.edu", "/mail/config-v1.1.xml"},
		{"autoconfig host with the address", "autoconfig.example.edu", "/mail/config-v1.1.xml?emailaddress=carol%40example.edu"},
		{"well-known at the domain", "example.edu", "/.well-known/autoconfig/mail/config-v1.1.xml"},
		{"well-known at the portal", "portal.example.edu:8443", "/.well-known/autoconfig/mail/config-v1.1.xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.mailApp(http.MethodGet, tc.host, tc.path, "", "").want(http.StatusOK, "<clientConfig", "<hostname>"+mailHost+"</hostname>")
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/xml") {
				t.Errorf("Content-Type %q", ct)
			}
			host, _, _ := strings.Cut(tc.host, ":")
			if host != "example.edu" && strings.Contains(r.body, host) {
				t.Errorf("the document names the request's host %q:\n%s", host, r.body)
			}
			in, out := autoconfigServers(t, r.body)
			if !slices.Equal(in, wantIncoming) || !slices.Equal(out, wantOutgoing) {
				t.Errorf("incoming %v, outgoing %v\nwant %v, %v", in, out, wantIncoming, wantOutgoing)
			}
			if strings.Contains(r.body, "1143") || strings.Contains(r.body, "1587") {
				t.Errorf("a listener without TLS is advertised:\n%s", r.body)
			}
			wantPortalHeaders(t, r)
			if len(r.set) != 0 {
				t.Errorf("cookies set: %v", r.set)
			}
		})
	}
	w.mailApp(http.MethodHead, "autoconfig.example.edu", "/mail/config-v1.1.xml", "", "").want(http.StatusOK)
	if w.checks.Load() != 0 {
		t.Errorf("%d backend checks", w.checks.Load())
	}
}

// Outlook's autodiscover, in any case of the path: IMAP, POP3 and SMTP on
// the mail host for a well-formed request; 405 for another method; 400,
// never a 500, for a malformed or oversized body; no session, no cookie,
// the portal's security headers, and the Authorization header some apps
// send with the user's password is never read or logged.
func TestAutodiscoverThroughPortal(t *testing.T) {
	w := newWorld(t)
	w.editConfig(backendSection, plaintextListeners+backendSection)
	const password = "carol-autodiscover-pw-Zk81"
	authz := "Basic " + base64.StdEncoding.EncodeToString([]byte("carol@example.edu:"+password))
	req := outlookRequest("carol@example.edu")
	oversized := req + strings.Repeat(" ", 64<<10) // beyond both the document's and the portal's limits
	justOver := req + strings.Repeat(" ", 16<<10-len(req)+1)

	for _, tc := range []struct {
		name, method, path, body string
		status                   []int // any of these
	}{
		{"lower case", http.MethodPost, "/autodiscover/autodiscover.xml", req, []int{http.StatusOK}},
		{"Outlook's case", http.MethodPost, "/Autodiscover/Autodiscover.xml", req, []int{http.StatusOK}},
		{"mixed case", http.MethodPost, "/AutoDiscover/AUTODISCOVER.xml", req, []int{http.StatusOK}},
		{"GET", http.MethodGet, "/autodiscover/autodiscover.xml", "", []int{http.StatusMethodNotAllowed}},
		{"autoconfig POST", http.MethodPost, "/mail/config-v1.1.xml", req, []int{http.StatusMethodNotAllowed}},
		{"malformed", http.MethodPost, "/autodiscover/autodiscover.xml", "<Autodiscover><Request>", []int{http.StatusBadRequest}},
		{"not XML", http.MethodPost, "/autodiscover/autodiscover.xml", "carol@example.edu", []int{http.StatusBadRequest}},
		{"empty", http.MethodPost, "/autodiscover/autodiscover.xml", "", []int{http.StatusBadRequest}},
		{"not an address", http.MethodPost, "/autodiscover/autodiscover.xml", outlookRequest("carol"), []int{http.StatusBadRequest}},
		{"just over the limit", http.MethodPost, "/autodiscover/autodiscover.xml", justOver, []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge}},
		{"oversized", http.MethodPost, "/autodiscover/autodiscover.xml", oversized, []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.mailApp(tc.method, "autodiscover.example.edu", tc.path, "text/xml; charset=utf-8", tc.body, "Authorization", authz)
			if !slices.Contains(tc.status, r.status) {
				t.Fatalf("status %d, want one of %v\n%s", r.status, tc.status, r.body)
			}
			wantPortalHeaders(t, r)
			if len(r.set) != 0 {
				t.Errorf("cookies set: %v", r.set)
			}
			if strings.Contains(r.body, "autodiscover.example.edu") {
				t.Errorf("the answer names the request's host:\n%s", r.body)
			}
			switch r.status {
			case http.StatusOK:
				if cc := r.header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q: the answer echoes the address", cc)
				}
				servers, logins := autodiscoverServers(t, r.body)
				want := []advertised{{"IMAP", mailHost, 993, "SSL"}, {"POP3", mailHost, 995, "SSL"}, {"SMTP", mailHost, 587, "TLS"}}
				if !slices.Equal(servers, want) {
					t.Errorf("protocols %v, want %v", servers, want)
				}
				for _, l := range logins {
					if l != "carol" { // [users] lists no domains: the local part
						t.Errorf("LoginName %q, want carol", l)
					}
				}
			case http.StatusMethodNotAllowed:
				if r.header.Get("Allow") == "" {
					t.Error("405 without Allow")
				}
			default:
				if len(r.body) > 200 || strings.Contains(r.body, "<") {
					t.Errorf("the refusal is not a short text: %q", r.body)
				}
			}
		})
	}
	noSecrets(t, w.logs.String(), password, strings.TrimPrefix(authz, "Basic "))
	if w.checks.Load() != 0 {
		t.Errorf("%d backend checks", w.checks.Load())
	}
}

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
