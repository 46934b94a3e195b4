package portal_test

// One-step mail app setup (issue 17) through the portal: the public
// autoconfig and autodiscover documents, served before the portal's own
// pages, and the signed Apple profile a signed-in 2FA user downloads,
// which carries a new app passcode.

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/selfsigned"
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
