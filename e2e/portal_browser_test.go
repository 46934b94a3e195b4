package e2e

// The browser half of the portal's end-to-end tests: a real headless
// Chromium driven over the DevTools protocol (chromedp, through a pipe, so
// the browser opens no debugging port), with only kanmon's self-signed
// certificate let through, and the screenshots the journey leaves as test
// artifacts.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
)

// Screen sizes: a laptop, and a phone (390x844 CSS pixels, an iPhone 12
// to 14) for the screenshots that check the pages on a small screen.
const (
	desktopWidth, desktopHeight = 1280, 900
	phoneWidth, phoneHeight     = 390, 844
	// browserStep bounds one browser action (a click and the page it
	// loads, a query). The machine is shared, so this is generous: it
	// would cover kanmon's own tarpit (about 2 s for a failed sign-in),
	// though these tests run with kanmontest's 1 ms one.
	browserStep = 30 * time.Second
)

// requireChromium returns the path of Debian's chromium (or a Chrome).
func requireChromium(t *testing.T) string {
	t.Helper()
	return requireTool(t, "apt-get install chromium; scripts/test-deps.sh does it",
		"chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome")
}

// spkiHash is the base64 SHA-256 of the certificate's public key, the form
// Chromium's --ignore-certificate-errors-spki-list takes.
func spkiHash(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// browser is one headless Chromium with one tab, pointed at a base URL.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab; each action gets browserStep
	base  string          // "https://127.0.0.1:port"
	shots string          // where screenshots go
	// client trusts the same certificate and follows no redirect, for
	// requests the test makes with the browser's cookie.
	client *http.Client

	mu      sync.Mutex
	blocked []string // what the CSP blocked, from Chromium's log
}

// startBrowser starts Chromium with a fresh profile that accepts exactly
// the certificate in certPEM (no blanket --ignore-certificate-errors) and
// closes it when the test ends.
func startBrowser(t *testing.T, base string, certPEM []byte) *browser {
	t.Helper()
	bin := requireChromium(t)
	profile := t.TempDir()
	out := &syncbuf.Buffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox, // root in a container
		chromedp.DisableGPU,
		chromedp.WindowSize(desktopWidth, desktopHeight),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, certPEM)),
		chromedp.Flag("lang", "en-US"), // Accept-Language: en-US

		chromedp.CombinedOutput(out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	// The profile directory is removed after this cleanup, which ends
	// Chromium and waits for it.
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	// The first action starts the browser; it gets no deadline, since the
	// browser lives as long as the context of its first action.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	dir := os.Getenv("PORTAL_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, ctx: ctx, base: base, shots: dir}
	// Chromium reports what a page's CSP blocked (an inline style, a
	// script, a foreign image) in its log; the pages must need nothing
	// the CSP forbids.
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*cdplog.EventEntryAdded); ok && (e.Entry.Source == cdplog.EntrySourceSecurity ||
			strings.Contains(e.Entry.Text, "Content Security Policy")) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.blocked = append(b.blocked, e.Entry.URL+": "+e.Entry.Text)
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, m := range b.blocked {
			t.Errorf("chromium blocked: %s", m)
		}
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("no certificate in certPEM")
	}
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       browserStep,
	}
	t.Cleanup(client.CloseIdleConnections)
	b.client = client
	return b
}

// do runs steps with the per-step deadline and fails the test on error.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStep)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// browserRun runs one action that returns a value, with the per-step deadline.
func browserRun[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStep)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// open loads base+path and returns the HTTP status of the document.
func (b *browser) open(path string) int64 {
	b.t.Helper()
	return b.openResponse(path).Status
}

// openResponse loads base+path and returns the document's response (the
// last one, after redirects).
func (b *browser) openResponse(path string) *network.Response {
	b.t.Helper()
	return browserRun(b, "open "+path, chromedp.NavigateResponse(b.base+path))
}

// postWithCookie posts form to path from outside the browser, with the
// browser's session cookie, and returns the HTTP status.
func (b *browser) postWithCookie(path string, form url.Values) int {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	c := b.sessionCookie()
	req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// fill sets the form field that the CSS selector sel finds.
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	if !b.has(sel) {
		b.t.Fatalf("browser: no %s on %s", sel, b.location())
	}
	if value == "" { // SetValue reports an empty value as not set
		b.do("clear "+sel, chromedp.Clear(chromedp.CSS(sel)))
		return
	}
	b.do("fill "+sel, chromedp.SetValue(chromedp.CSS(sel), value))
}

// press clicks the button that sel finds and waits for the page the form
// (or link) leads to; it returns that page's HTTP status.
func (b *browser) press(sel string) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStep)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: press %s on %s: %v", sel, b.location(), err)
	}
	if resp == nil {
		b.t.Fatalf("browser: press %s: no page loaded", sel)
	}
	return resp.Status
}

// location is the URL of the current page (for messages).
func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return loc
}

// has reports whether sel matches an element of the current page, without
// waiting (the page has loaded when open and press return).
func (b *browser) has(sel string) bool {
	b.t.Helper()
	return browserRun(b, "query "+sel, chromedp.Evaluate[bool](fmt.Sprintf("document.querySelector(%q) !== null", sel)))
}

// count is how many elements sel matches on the current page.
func (b *browser) count(sel string) int {
	b.t.Helper()
	return browserRun(b, "count "+sel, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// text is the visible text of the first element sel matches, trimmed.
func (b *browser) text(sel string) string {
	b.t.Helper()
	if !b.has(sel) {
		b.t.Fatalf("browser: no %s on %s", sel, b.location())
	}
	return strings.TrimSpace(browserRun(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel))))
}

// texts is the trimmed text of every element sel matches.
func (b *browser) texts(sel string) []string {
	b.t.Helper()
	return browserRun(b, "texts of "+sel, chromedp.Evaluate[[]string](fmt.Sprintf(
		"Array.from(document.querySelectorAll(%q), e => e.textContent.trim())", sel)))
}

// attr is an attribute of the first element sel matches ("" when absent).
func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	if !b.has(sel) {
		b.t.Fatalf("browser: no %s on %s", sel, b.location())
	}
	return browserRun(b, "attribute "+name+" of "+sel, chromedp.Evaluate[string](fmt.Sprintf(
		"document.querySelector(%q).getAttribute(%q) ?? ''", sel, name)))
}

// sessionCookie returns the browser's portal session cookie.
func (b *browser) sessionCookie() *network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStep)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/"}})
	if err != nil {
		b.t.Fatalf("browser: cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == portalCookie {
			return c
		}
	}
	b.t.Fatalf("no %s cookie", portalCookie)
	return nil
}

// setHeaders makes the browser send extra request headers (it replaces
// the previous set; an empty set ends them).
func (b *browser) setHeaders(h network.Headers) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStep)
	defer cancel()
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h}); err != nil {
		b.t.Fatalf("browser: extra headers: %v", err)
	}
}

// screenshot saves the whole page as name.png at the laptop size, and as
// name-phone.png on a phone-sized screen, and returns the two paths.
func (b *browser) screenshot(name string) (desktop, phone string) {
	b.t.Helper()
	save := func(file string) string {
		png := browserRun(b, "screenshot "+file, chromedp.FullScreenshot(100))
		path := filepath.Join(b.shots, file)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
		return path
	}
	desktop = save(name + ".png")
	b.do("phone screen", chromedp.EmulateViewport(phoneWidth, phoneHeight, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch))
	phone = save(name + "-phone.png")
	// ResetViewport would keep the phone's layout width; name the size.
	b.do("laptop screen", chromedp.EmulateViewport(desktopWidth, desktopHeight))
	return desktop, phone
}
