package main

import (
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/otp"
)

const carolPortalPW = "carol-portal-pw-Tn8"

// portalBrowser is an HTTPS client with cookies, remembering the last
// page's CSRF token.
type portalBrowser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *portalBrowser) do(req *http.Request) string {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("%s %s: %d\n%s", req.Method, req.URL.Path, resp.StatusCode, body)
	}
	if m := csrfField.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return string(body)
}

func (b *portalBrowser) get(path string) string {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.do(req)
}

func (b *portalBrowser) post(path string, kv ...string) string {
	b.t.Helper()
	v := url.Values{"csrf": {b.csrf}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// cookie returns the value of the browser's cookie name, "" without one.
func (b *portalBrowser) cookie(name string) string {
	base, _ := url.Parse(b.base)
	for _, c := range b.c.Jar.Cookies(base) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// signInPortal runs `kanmon serve` with [portal] (and extra, more
// configuration) in front of an in-process backend where carol's password
// is carolPortalPW, and signs carol in with a new browser. It returns the
// page after the sign-in.
func signInPortal(t *testing.T, extra string) (*opsServe, *portalBrowser, string) {
	t.Helper()
	s := startServeFiles(t, startMemIMAP(t, "carol", carolPortalPW), kanmontest.Options{
		Portal: &kanmontest.Portal{Issuer: "Kanmon Test"},
		Extra:  extra,
	})
	jar, _ := cookiejar.New(nil)
	b := &portalBrowser{t: t, base: "https://" + s.PortalAddr, c: &http.Client{
		Jar:       jar,
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: s.ClientTLS},
	}}
	b.get("/signin")
	return s, b, b.post("/signin", "user", "carol", "password", carolPortalPW)
}

// startEnrollment asks for two-step verification and returns the TOTP key
// that the enrollment page shows, as shown and decoded.
func startEnrollment(t *testing.T, b *portalBrowser) (shown string, secret []byte) {
	t.Helper()
	page := b.post("/2fa/start")
	key := regexp.MustCompile(`id="totp-key"[^>]*>([^<]+)<`).FindStringSubmatch(page)
	if key == nil {
		t.Fatalf("enrollment page:\n%s", page)
	}
	secret, err := otp.ParseKey(key[1])
	if err != nil {
		t.Fatal(err)
	}
	return key[1], secret
}

// `kanmon serve` with [portal]: the portal answers over HTTPS with the
// [tls] certificate, checks the password at the real (in-process)
// backend, and its changes go through serve's reload: a passcode made in
// the portal logs into IMAP at once, and deleting it closes that session.
// SIGTERM (the context's end) stops the portal.
func TestServePortal(t *testing.T) {
	s, b, page := signInPortal(t, "")
	imapAddr, portalAddr, logs := s.IMAPPlain, s.PortalAddr, s.log
	if !strings.Contains(page, `id="twofa-status" data-on="false"`) {
		t.Fatalf("after sign-in:\n%s", page)
	}
	_, secret := startEnrollment(t, b)
	if page = b.post("/2fa/enroll", "code", otp.Code(secret, time.Now())); strings.Count(page, `class="one-time-code"`) != 10 {
		t.Fatalf("one-time codes page:\n%s", page)
	}
	b.get("/account")
	page = b.post("/passcodes/add", "app", "Thunderbird")
	m := regexp.MustCompile(`id="passcode"[^>]*>([A-Z ]+)<`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("passcode page:\n%s", page)
	}
	passcode := strings.ReplaceAll(m[1], " ", "")

	// The reload made the passcode work and the password stop working.
	c := dialIMAP(t, imapAddr)
	c.send("a1 LOGIN carol " + carolPortalPW)
	c.expect("a1 NO ")
	c.send("a2 LOGIN carol " + passcode)
	c.expect("a2 OK ")

	b.get("/account")
	start := time.Now()
	b.post("/passcodes/delete", "app", "Thunderbird")
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		l, err := c.br.ReadString('\n')
		if err != nil {
			break
		}
		if !strings.HasPrefix(l, "* ") {
			t.Fatalf("revoked session: got %q", l)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the revoked session took %v to close", d)
	}
	for _, want := range []string{"proto=portal", "msg=login", "user=carol", "passcode added", "passcode deleted", `msg="reloaded the accounts file"`, "portal started"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("serve log lacks %q", want)
		}
	}
	if strings.Contains(logs.String(), carolPortalPW) || strings.Contains(logs.String(), passcode) {
		t.Error("the serve log holds a secret")
	}

	s.cancel()
	s.returned(t, 30*time.Second)
	if conn, err := net.DialTimeout("tcp", portalAddr, time.Second); err == nil {
		conn.Close()
		t.Error("the portal still accepts connections after SIGTERM")
	}
}
