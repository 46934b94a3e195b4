package e2e

// One-step mail app setup (issue 17) against a running `kanmon serve` in
// front of the real Dovecot: curl fetches the Thunderbird autoconfig file
// and posts an Outlook autodiscover request; a headless Chromium downloads
// the Apple profile, which openssl verifies against the test certificate
// and python3's plistlib reads; its passcode logs in over IMAP, and stops
// working once deleted in the portal.

import (
	"context"
	"encoding/xml"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/otp"
)

// autoconfigDoc is what the test reads of the ISPDB clientConfig.
type autoconfigDoc struct {
	Provider struct {
		Incoming []autoconfigServer `xml:"incomingServer"`
		Outgoing []autoconfigServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type autoconfigServer struct {
	Type       string `xml:"type,attr"`
	Hostname   string `xml:"hostname"`
	Port       int    `xml:"port"`
	SocketType string `xml:"socketType"`
	Username   string `xml:"username"`
}

// curlPortal runs curl against the portal, trusting the test certificate,
// and returns the body and the HTTP status.
func curlPortal(t *testing.T, p *kanmontest.Files, args ...string) (string, int) {
	t.Helper()
	curl := requireTool(t, "apt-get install curl", "curl")
	_, port, _ := net.SplitHostPort(p.PortalAddr)
	full := append([]string{"-sS", "--cacert", p.CertFile, "-w", "\n%{http_code}", "--resolve", "localhost:" + port + ":127.0.0.1"}, args...)
	out, err := exec.Command(curl, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	body, code, _ := strings.Cut(string(out), "\n")
	if i := strings.LastIndex(string(out), "\n"); i >= 0 {
		body, code = string(out[:i]), string(out[i+1:])
	}
	status, _ := strconv.Atoi(strings.TrimSpace(code))
	return body, status
}

// portalURL is the portal's URL for path under the certificate's name.
func portalURL(p *kanmontest.Files, path string) string {
	_, port, _ := net.SplitHostPort(p.PortalAddr)
	return "https://localhost:" + port + path
}

// TestE2EMailSetup runs the tests against `kanmon serve` with
// IMAP, POP3 and submission listeners in both TLS modes.
func TestE2EMailSetup(t *testing.T) {
	requireChromium(t)
	oathtool := requireTool(t, "apt-get install oathtool; scripts/test-deps.sh does it", "oathtool")
	openssl := requireTool(t, "apt-get install openssl", "openssl")
	python := requireTool(t, "apt-get install python3", "python3")
	sink := dovecottest.StartSink(t)
	dc := startDovecot(t, dovecottest.Options{SubmissionRelay: sink.Addr}, "alice")
	bin := buildKanmon(t)
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	p := startRevokeServer(t, bin, dc, kanmontest.Options{
		Portal:            &kanmontest.Portal{Issuer: portalIssuer, MailHost: portalMailHost},
		Listeners:         []string{"implicit", "starttls"},
		POP3Backend:       dc.POP3Addr,
		SubmissionBackend: dc.SubmissionAddr,
	}, func(cfg string) {
		dir := filepath.Dir(cfg)
		if _, err := auth.EnrollTOTP(auth.OpenStore(filepath.Join(dir, "accounts.toml")), filepath.Join(dir, "state"), "alice", secret); err != nil {
			t.Fatal(err)
		}
	})
	waitFor(t, 10*time.Second, "the portal to listen", func() bool {
		c, err := net.Dial("tcp", p.PortalAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	port := func(addr string) int {
		_, s, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(s)
		return n
	}

	// Thunderbird's autoconfig, from the running server.
	body, status := curlPortal(t, p.Files, portalURL(p.Files, "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.edu"))
	if status != http.StatusOK {
		t.Fatalf("autoconfig: HTTP %d\n%s", status, body)
	}
	var doc autoconfigDoc
	if err := xml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("autoconfig is not XML: %v\n%s", err, body)
	}
	want := map[string]autoconfigServer{
		"imap-SSL":      {Type: "imap", Port: port(p.IMAPS), SocketType: "SSL"},
		"imap-STARTTLS": {Type: "imap", Port: port(p.IMAPStartTLS), SocketType: "STARTTLS"},
		"pop3-SSL":      {Type: "pop3", Port: port(p.POP3S), SocketType: "SSL"},
		"pop3-STARTTLS": {Type: "pop3", Port: port(p.POP3StartTLS), SocketType: "STARTTLS"},
		"smtp-SSL":      {Type: "smtp", Port: port(p.SubmissionS), SocketType: "SSL"},
		"smtp-STARTTLS": {Type: "smtp", Port: port(p.SubmissionStartTLS), SocketType: "STARTTLS"},
	}
	got := map[string]autoconfigServer{}
	for _, s := range append(doc.Provider.Incoming, doc.Provider.Outgoing...) {
		if s.Hostname != portalMailHost || s.Username != "%EMAILLOCALPART%" {
			t.Errorf("autoconfig server %+v: want host %s, user %%EMAILLOCALPART%%", s, portalMailHost)
		}
		got[s.Type+"-"+s.SocketType] = autoconfigServer{Type: s.Type, Port: s.Port, SocketType: s.SocketType}
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("autoconfig %s: %+v, want %+v", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("autoconfig lists %d servers, want %d:\n%s", len(got), len(want), body)
	}

	// Outlook's autodiscover: a POST gets the settings, a GET an error.
	req := `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>alice@example.edu</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`
	body, status = curlPortal(t, p.Files, "-X", "POST", "-H", "Content-Type: text/xml", "--data-binary", req, portalURL(p.Files, "/autodiscover/autodiscover.xml"))
	if status != http.StatusOK || !strings.Contains(body, "<Type>IMAP</Type>") || !strings.Contains(body, "<Type>SMTP</Type>") ||
		!strings.Contains(body, "<Server>"+portalMailHost+"</Server>") || !strings.Contains(body, "<Port>"+strconv.Itoa(port(p.IMAPS))+"</Port>") {
		t.Errorf("autodiscover: HTTP %d\n%s", status, body)
	}
	if body, status = curlPortal(t, p.Files, portalURL(p.Files, "/autodiscover/autodiscover.xml")); status != http.StatusMethodNotAllowed {
		t.Errorf("autodiscover GET: HTTP %d, want 405\n%s", status, body)
	}
	if body, status = curlPortal(t, p.Files, "-X", "POST", "--data-binary", "<Autodiscover><Request>", portalURL(p.Files, "/Autodiscover/Autodiscover.xml")); status != http.StatusBadRequest {
		t.Errorf("autodiscover with a malformed body: HTTP %d, want 400\n%s", status, body)
	}

	// The browser: sign in, "Set up an iPhone", download.
	b := startBrowser(t, "https://"+p.PortalAddr, p.CertPEM)
	key := otp.FormatKey(secret)
	b.signIn("alice", alicePassword, totpCode(t, oathtool, key, currentStep()))
	b.onAccount(true)
	b.screenshot("apple-1-account")
	downloads := t.TempDir()
	dctx, dcancel := context.WithTimeout(b.ctx, browserStep)
	_, err = chromedp.Call(dctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	})
	dcancel()
	if err != nil {
		t.Fatalf("browser: allow downloads: %v", err)
	}
	var mu sync.Mutex
	var headers network.Headers
	listen, stop := context.WithCancel(b.ctx)
	defer stop()
	err = chromedp.Listen(listen, func(ev any) {
		if e, ok := ev.(*network.EventResponseReceived); ok && strings.HasSuffix(e.Response.URL, "/setup/apple") {
			mu.Lock()
			headers = e.Response.Headers
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("browser: listen: %v", err)
	}
	b.fill("#apple-name", "iPhone")
	b.do("press #apple-profile", chromedp.Click(chromedp.CSS("#apple-profile")))
	var file string
	waitFor(t, 20*time.Second, "the profile to download", func() bool {
		m, _ := filepath.Glob(filepath.Join(downloads, "*.mobileconfig"))
		if len(m) == 1 {
			file = m[0]
		}
		return file != ""
	})
	mu.Lock()
	h := map[string]string{}
	for k, v := range headers {
		h[strings.ToLower(k)] = strings.TrimSpace(strings.Split(v.(string), "\n")[0])
	}
	mu.Unlock()
	if h["content-type"] != "application/x-apple-aspen-config" || !strings.Contains(h["cache-control"], "no-store") ||
		!strings.HasPrefix(h["content-disposition"], "attachment;") {
		t.Errorf("the profile's headers: %v", h)
	}
	if filepath.Base(file) != "iPhone.mobileconfig" {
		t.Errorf("downloaded as %s", filepath.Base(file))
	}

	// openssl verifies the signature against the portal's certificate;
	// plistlib reads what it signed.
	payload := filepath.Join(t.TempDir(), "payload.plist")
	if out, err := exec.Command(openssl, "smime", "-verify", "-inform", "DER", "-in", file, "-CAfile", p.CertFile,
		"-purpose", "any", "-out", payload).CombinedOutput(); err != nil {
		t.Fatalf("openssl smime -verify: %v\n%s", err, out)
	}
	script := `import plistlib, sys
d = plistlib.load(open(sys.argv[1], "rb"))
m = [p for p in d["PayloadContent"] if p["PayloadType"] == "com.apple.mail.managed"][0]
print(m["IncomingMailServerHostName"], m["IncomingMailServerPortNumber"], m["IncomingMailServerUsername"], m["IncomingPassword"], m["OutgoingMailServerHostName"], m["OutgoingMailServerPortNumber"])`
	out, err := exec.Command(python, "-c", script, payload).CombinedOutput()
	if err != nil {
		t.Fatalf("plistlib: %v\n%s", err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) != 6 || fields[0] != portalMailHost || fields[1] != strconv.Itoa(port(p.IMAPS)) || fields[2] != "alice" ||
		fields[4] != portalMailHost || fields[5] != strconv.Itoa(port(p.SubmissionS)) {
		t.Fatalf("the profile's mail payload: %q", out)
	}
	passcode := fields[3]
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), passcode) {
		t.Error("the passcode is not in the signed file (attached content expected)")
	}

	// The passcode inside logs in over IMAP; deleted, it does not.
	ps := &portalServer{revokeServer: p, bin: bin}
	if r := ps.imapLogin(t, "alice", passcode); !strings.HasPrefix(r, "OK") {
		t.Fatalf("IMAP with the profile's passcode: %s", r)
	}
	b.open("/account")
	if scope := b.text(`#passcodes tr[data-app="iPhone"]`); !strings.Contains(scope, "IMAP") || !strings.Contains(scope, "SMTP") || strings.Contains(scope, "POP3") {
		t.Errorf("the profile's passcode is not limited to IMAP and SMTP: %q", scope)
	}
	b.press(`tr[data-app="iPhone"] .delete-passcode`)
	if r := ps.imapLogin(t, "alice", passcode); r != failedReply {
		t.Errorf("IMAP with the deleted profile passcode: %q, want %q", r, failedReply)
	}

	p.stop(t)
	if strings.Contains(p.log.String(), passcode) {
		t.Error("the serve log holds the profile's passcode")
	}
}
