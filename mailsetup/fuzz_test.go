package mailsetup

import (
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/config"
)

// FuzzParseAutodiscoverRequest checks that no body panics the parser or
// makes the handler answer other than 200 or 400, that every refusal is a
// *RequestError, and that every accepted address makes a well-formed
// response.
func FuzzParseAutodiscoverRequest(f *testing.F) {
	f.Add(outlookRequest("alice@example.edu"))
	f.Add(outlookRequest("a&amp;b@example.edu"))
	f.Add(`<Autodiscover><Request><EMailAddress>a@b</EMailAddress></Request></Autodiscover>`)
	f.Add(`<Autodiscover xmlns="` + RequestNamespace + `"><Request><AcceptableResponseSchema>x</AcceptableResponseSchema></Request></Autodiscover>`)
	f.Add(`<!DOCTYPE a [<!ENTITY x "y">]><Autodiscover/>`)
	f.Add("")
	s := Settings{Host: "mail.example.edu", Listeners: []Listener{
		{config.ProtocolIMAP, 993, config.TLSImplicit},
		{config.ProtocolSubmission, 587, config.TLSStartTLS},
	}}
	h := NewHandler(func(*http.Request) Settings { return s }, nil)
	f.Fuzz(func(t *testing.T, body string) {
		email, err := ParseAutodiscoverRequest(strings.NewReader(body))
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a *RequestError", err)
			}
		} else {
			out, err := Autodiscover(s, email)
			if err != nil {
				t.Fatalf("accepted %q but Autodiscover: %v", email, err)
			}
			if err := xml.Unmarshal(out, new(struct{})); err != nil {
				t.Fatalf("response not well-formed: %v\n%s", err, out)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", AutodiscoverPath, strings.NewReader(body)))
		if want := map[bool]int{true: 200, false: 400}[err == nil]; w.Code != want {
			t.Fatalf("handler answered %d, want %d", w.Code, want)
		}
	})
}
