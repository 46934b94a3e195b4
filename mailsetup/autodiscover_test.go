package mailsetup

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/config"
)

// outlookRequest is the body Outlook posts, with the address in it.
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

func TestParseAutodiscoverRequest(t *testing.T) {
	for _, tc := range []struct {
		name, body, email string
		reason            error // nil: accepted
	}{
		{"outlook", outlookRequest("alice@example.edu"), "alice@example.edu", nil},
		{"spaces around the address", outlookRequest("\n  alice@example.edu \n"), "alice@example.edu", nil},
		{"no namespace", `<Autodiscover><Request><EMailAddress>a@example.edu</EMailAddress></Request></Autodiscover>`, "a@example.edu", nil},
		{"no schema", `<Autodiscover xmlns="` + RequestNamespace + `"><Request><EMailAddress>a@example.edu</EMailAddress></Request></Autodiscover>`, "a@example.edu", nil},
		{"trailing comment", outlookRequest("a@example.edu") + "<!-- x -->\n", "a@example.edu", nil},
		{"escaped", outlookRequest("a&amp;b@example.edu"), "a&b@example.edu", nil},
		{"empty", "", "", ErrMalformedRequest},
		{"not XML", "alice@example.edu", "", ErrMalformedRequest},
		{"unclosed", `<Autodiscover><Request><EMailAddress>a@example.edu</EMailAddress>`, "", ErrMalformedRequest},
		{"other root", `<Discover><Request><EMailAddress>a@example.edu</EMailAddress></Request></Discover>`, "", ErrMalformedRequest},
		{"two roots", outlookRequest("a@example.edu") + "<Autodiscover/>", "", ErrMalformedRequest},
		{"text after root", outlookRequest("a@example.edu") + "junk", "", ErrMalformedRequest},
		{"entity", `<!DOCTYPE a [<!ENTITY x "y">]><Autodiscover><Request><EMailAddress>&x;@example.edu</EMailAddress></Request></Autodiscover>`, "", ErrMalformedRequest},
		{"no address", `<Autodiscover><Request></Request></Autodiscover>`, "", ErrMissingAddress},
		{"blank address", outlookRequest("  "), "", ErrMissingAddress},
		{"no Request", `<Autodiscover><EMailAddress>a@example.edu</EMailAddress></Autodiscover>`, "", ErrMissingAddress},
		{"not an address", outlookRequest("alice"), "", ErrInvalidAddress},
		{"address with space", outlookRequest("alice smith@example.edu"), "", ErrInvalidAddress},
		{"address too long", outlookRequest(strings.Repeat("a", 64) + "@" + strings.Repeat("b.", 130) + "edu"), "", ErrInvalidAddress},
		{"mobilesync schema", strings.Replace(outlookRequest("a@example.edu"), "outlook/responseschema/2006a", "mobilesync/responseschema/2006", 1), "", ErrUnsupportedSchema},
		{"mobilesync request", strings.Replace(outlookRequest("a@example.edu"), "outlook/requestschema", "mobilesync/requestschema", 1), "", ErrUnsupportedSchema},
		{"too large", outlookRequest("a@example.edu") + strings.Repeat(" ", MaxAutodiscoverRequest), "", ErrRequestTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			email, err := ParseAutodiscoverRequest(strings.NewReader(tc.body))
			if tc.reason == nil {
				if err != nil || email != tc.email {
					t.Errorf("= %q, %v; want %q", email, err, tc.email)
				}
				return
			}
			var re *RequestError
			if !errors.As(err, &re) || !errors.Is(err, tc.reason) {
				t.Fatalf("= %q, %v; want a *RequestError for %v", email, err, tc.reason)
			}
			if re.ClientText() != tc.reason.Error() {
				t.Errorf("ClientText() = %q", re.ClientText())
			}
			wantCode := ErrorCodeInvalidRequest
			if tc.reason == ErrUnsupportedSchema {
				wantCode = ErrorCodeUnsupportedSchema
			}
			if re.Code() != wantCode {
				t.Errorf("Code() = %d, want %d", re.Code(), wantCode)
			}
		})
	}
}

func TestParseAutodiscoverRequestReadError(t *testing.T) {
	_, err := ParseAutodiscoverRequest(io.MultiReader(strings.NewReader("<Auto"), errReader{}))
	if !errors.Is(err, ErrMalformedRequest) || !errors.Is(err, errBroken) {
		t.Errorf("err = %v, want malformed wrapping the read error", err)
	}
}

var errBroken = errors.New("connection broken")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

// testAutodiscover is the response as a client reads it.
type testAutodiscover struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response struct {
		XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Account struct {
			AccountType string         `xml:"AccountType"`
			Action      string         `xml:"Action"`
			Protocols   []testProtocol `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

type testProtocol struct {
	Type, Server                                                  string
	Port                                                          int
	LoginName, SPA, SSL, Encryption, AuthRequired, DomainRequired string
}

func parseAutodiscoverResponse(t *testing.T, out []byte) testAutodiscover {
	t.Helper()
	if !bytes.HasPrefix(out, []byte(xml.Header)) {
		t.Errorf("no XML header:\n%s", out)
	}
	var got testAutodiscover
	if err := xml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Response.Account.AccountType != "email" || got.Response.Account.Action != "settings" {
		t.Errorf("AccountType %q, Action %q", got.Response.Account.AccountType, got.Response.Account.Action)
	}
	return got
}

func TestAutodiscover(t *testing.T) {
	out, err := Autodiscover(fullSettings(t), "alice@example.edu")
	if err != nil {
		t.Fatal(err)
	}
	got := parseAutodiscoverResponse(t, out)
	p := func(typ string, port int, enc string) testProtocol {
		return testProtocol{typ, "mail.example.edu", port, "alice@example.edu", "off", "on", enc, "on", "off"}
	}
	want := []testProtocol{p("IMAP", 993, "SSL"), p("POP3", 995, "SSL"), p("SMTP", 465, "SSL")}
	if !slices.Equal(got.Response.Account.Protocols, want) {
		t.Errorf("protocols =\n%+v\nwant\n%+v", got.Response.Account.Protocols, want)
	}
}

func TestAutodiscoverStartTLSLocalPart(t *testing.T) {
	s := Settings{Host: "mail.example.edu", Listeners: []Listener{
		{config.ProtocolSubmission, 587, config.TLSStartTLS},
		{config.ProtocolIMAP, 143, config.TLSStartTLS},
		{config.ProtocolIMAP, 1143, config.TLSNone},
	}}
	out, err := Autodiscover(s, "alice@example.edu")
	if err != nil {
		t.Fatal(err)
	}
	got := parseAutodiscoverResponse(t, out)
	p := func(typ string, port int) testProtocol {
		return testProtocol{typ, "mail.example.edu", port, "alice", "off", "on", "TLS", "on", "off"}
	}
	want := []testProtocol{p("IMAP", 143), p("SMTP", 587)}
	if !slices.Equal(got.Response.Account.Protocols, want) {
		t.Errorf("protocols =\n%+v\nwant\n%+v", got.Response.Account.Protocols, want)
	}
}

func TestAutodiscoverErrors(t *testing.T) {
	good := Settings{Host: "h.example", Listeners: []Listener{{config.ProtocolIMAP, 993, config.TLSImplicit}}}
	for _, tc := range []struct {
		name  string
		s     Settings
		email string
	}{
		{"bad address", good, "alice"},
		{"address with markup", good, "<a>@example.edu"},
		{"no host", Settings{Listeners: good.Listeners}, "a@example.edu"},
		{"only submission", Settings{Host: "h", Listeners: []Listener{{config.ProtocolSubmission, 465, config.TLSImplicit}}}, "a@example.edu"},
		{"only plaintext", Settings{Host: "h", Listeners: []Listener{{config.ProtocolIMAP, 143, config.TLSNone}}}, "a@example.edu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out, err := Autodiscover(tc.s, tc.email); err == nil {
				t.Errorf("Autodiscover() = %s, want an error", out)
			}
		})
	}
}

func TestAutodiscoverError(t *testing.T) {
	now := time.Date(2025, 4, 1, 16, 56, 32, 616402700, time.UTC)
	out, err := AutodiscoverError("mail.example.edu", ErrorCodeInvalidRequest, now)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
		Response struct {
			XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Response"`
			Error   struct {
				Time      string `xml:"Time,attr"`
				ID        string `xml:"Id,attr"`
				ErrorCode int
				Message   string
			}
		}
	}
	if err := xml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	e := got.Response.Error
	if e.Time != "16:56:32.6164027" || e.ID == "" || e.ErrorCode != 600 || e.Message != "Invalid Request" {
		t.Errorf("Error = %+v", e)
	}
	if _, err := AutodiscoverError("h", 999, now); err == nil {
		t.Error("unknown code accepted")
	}
}
