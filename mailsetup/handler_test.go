package mailsetup

import (
	"bytes"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/config"
)

func newTestHandler(t *testing.T, s Settings) (http.Handler, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return NewHandler(func(*http.Request) Settings { return s }, log), &logs
}

func TestHandler(t *testing.T) {
	h, _ := newTestHandler(t, fullSettings(t))
	req := outlookRequest("alice@example.edu")
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		contentType, cache       string
		bodyHas                  string
		allow                    string
	}{
		{"autoconfig", "GET", "/mail/config-v1.1.xml", "", 200, ContentTypeXML, "public, max-age=300", "<clientConfig", ""},
		{"autoconfig with address", "GET", "/mail/config-v1.1.xml?emailaddress=alice%40example.edu", "", 200, ContentTypeXML, "public, max-age=300", "<clientConfig", ""},
		{"well-known", "GET", "/.well-known/autoconfig/mail/config-v1.1.xml", "", 200, ContentTypeXML, "public, max-age=300", "<clientConfig", ""},
		{"autoconfig HEAD", "HEAD", "/mail/config-v1.1.xml", "", 200, ContentTypeXML, "public, max-age=300", "", ""},
		{"autoconfig POST", "POST", "/mail/config-v1.1.xml", "x", 405, "text/plain; charset=utf-8", "", "method not allowed", "GET, HEAD"},
		{"emailaddress too long", "GET", "/mail/config-v1.1.xml?emailaddress=" + strings.Repeat("a", MaxAddressLength+1), "", 400, "text/plain; charset=utf-8", "", "too long", ""},
		{"autodiscover", "POST", "/autodiscover/autodiscover.xml", req, 200, ContentTypeXML, "no-store", "<LoginName>alice@example.edu</LoginName>", ""},
		{"Autodiscover", "POST", "/Autodiscover/Autodiscover.xml", req, 200, ContentTypeXML, "no-store", "<Type>SMTP</Type>", ""},
		{"AUTODISCOVER", "POST", "/AUTODISCOVER/AUTODISCOVER.XML", req, 200, ContentTypeXML, "no-store", "<Type>IMAP</Type>", ""},
		{"autodiscover GET", "GET", "/autodiscover/autodiscover.xml", "", 405, "text/plain; charset=utf-8", "", "method not allowed", "POST"},
		{"malformed", "POST", "/autodiscover/autodiscover.xml", "<Autodiscover>", 400, "text/plain; charset=utf-8", "no-store", ErrMalformedRequest.Error(), ""},
		{"empty", "POST", "/autodiscover/autodiscover.xml", "", 400, "text/plain; charset=utf-8", "no-store", ErrMalformedRequest.Error(), ""},
		{"oversized", "POST", "/autodiscover/autodiscover.xml", req + strings.Repeat(" ", MaxAutodiscoverRequest), 400, "text/plain; charset=utf-8", "no-store", ErrRequestTooLarge.Error(), ""},
		{"wrong schema", "POST", "/autodiscover/autodiscover.xml", strings.Replace(req, "outlook/responseschema/2006a", "mobilesync/responseschema/2006", 1), 400, "text/plain; charset=utf-8", "no-store", ErrUnsupportedSchema.Error(), ""},
		{"missing address", "POST", "/autodiscover/autodiscover.xml", outlookRequest(""), 400, "text/plain; charset=utf-8", "no-store", ErrMissingAddress.Error(), ""},
		{"invalid address", "POST", "/autodiscover/autodiscover.xml", outlookRequest("alice"), 400, "text/plain; charset=utf-8", "no-store", ErrInvalidAddress.Error(), ""},
		{"other path", "GET", "/autodiscover/other.xml", "", 404, "text/plain; charset=utf-8", "", "not found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			r.Header.Set("Authorization", "Basic YWxpY2U6c2VjcmV0") // ignored
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			res := w.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.code {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.code, body)
			}
			if ct := res.Header.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
			}
			if cc := res.Header.Get("Cache-Control"); cc != tc.cache {
				t.Errorf("Cache-Control %q, want %q", cc, tc.cache)
			}
			if a := res.Header.Get("Allow"); a != tc.allow {
				t.Errorf("Allow %q, want %q", a, tc.allow)
			}
			if !strings.Contains(string(body), tc.bodyHas) {
				t.Errorf("body does not have %q:\n%s", tc.bodyHas, body)
			}
			if tc.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD has a body: %s", body)
			}
			if tc.code == 200 && tc.method != "HEAD" {
				if err := xml.Unmarshal(body, new(struct{})); err != nil {
					t.Errorf("not well-formed: %v", err)
				}
			}
			if tc.code >= 400 && len(body) > 80 {
				t.Errorf("error body too long: %q", body)
			}
		})
	}
}

func TestHandlerNoListeners(t *testing.T) {
	s := Settings{Host: "mail.example.edu", Listeners: []Listener{{config.ProtocolIMAP, 143, config.TLSNone}}}
	h, logs := newTestHandler(t, s)
	for _, r := range []*http.Request{
		httptest.NewRequest("GET", AutoconfigPath, nil),
		httptest.NewRequest("POST", AutodiscoverPath, strings.NewReader(outlookRequest("alice@example.edu"))),
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusNotFound || strings.Contains(w.Body.String(), "143") {
			t.Errorf("%s %s: %d %q, want 404 without settings", r.Method, r.URL.Path, w.Code, w.Body)
		}
	}
	if !strings.Contains(logs.String(), "no listener with TLS") {
		t.Errorf("log does not say why:\n%s", logs)
	}
}

func TestHandlerNilLog(t *testing.T) {
	h := NewHandler(func(*http.Request) Settings { return Settings{} }, nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", AutodiscoverPath, strings.NewReader("x")))
	if w.Code != http.StatusBadRequest {
		t.Errorf("status %d", w.Code)
	}
}

// TestHandlerSettingsPerRequest checks the settings function sees the
// request, so the portal can fall back to the name the browser used.
func TestHandlerSettingsPerRequest(t *testing.T) {
	h := NewHandler(func(r *http.Request) Settings {
		return Settings{Host: r.Host, Listeners: []Listener{{config.ProtocolIMAP, 993, config.TLSImplicit}}}
	}, nil)
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", AutoconfigPath, nil)
	r.Host = "imap.example.org"
	h.ServeHTTP(w, r)
	if !strings.Contains(w.Body.String(), "<hostname>imap.example.org</hostname>") {
		t.Errorf("body:\n%s", w.Body)
	}
}
