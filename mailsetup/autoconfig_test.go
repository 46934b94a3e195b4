package mailsetup

import (
	"bytes"
	"encoding/xml"
	"errors"
	"slices"
	"testing"

	"github.com/kanmon-mail/kanmon/config"
)

// testClientConfig is what the test reads back: the format as Thunderbird
// parses it, independent of the package's own structs.
type testClientConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID          string             `xml:"id,attr"`
		Domains     []string           `xml:"domain"`
		DisplayName string             `xml:"displayName"`
		Incoming    []testServerConfig `xml:"incomingServer"`
		Outgoing    []testServerConfig `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type testServerConfig struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Username       string `xml:"username"`
	Authentication string `xml:"authentication"`
}

func TestClientConfigRoundTrip(t *testing.T) {
	out, err := ClientConfig(fullSettings(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, []byte(xml.Header)) {
		t.Errorf("no XML header:\n%s", out)
	}
	var got testClientConfig
	if err := xml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Version != "1.1" || got.Provider.ID != "example.edu" || !slices.Equal(got.Provider.Domains, []string{"example.edu"}) ||
		got.Provider.DisplayName != "Example University" {
		t.Errorf("version %q, provider %q, domains %q, displayName %q", got.Version, got.Provider.ID, got.Provider.Domains, got.Provider.DisplayName)
	}
	srv := func(typ string, port int, socket string) testServerConfig {
		return testServerConfig{typ, "mail.example.edu", port, socket, "%EMAILADDRESS%", "password-cleartext"}
	}
	wantIn := []testServerConfig{
		srv("imap", 993, "SSL"),
		srv("imap", 143, "STARTTLS"),
		srv("pop3", 995, "SSL"),
		srv("pop3", 110, "STARTTLS"),
	}
	wantOut := []testServerConfig{
		srv("smtp", 465, "SSL"),
		srv("smtp", 587, "STARTTLS"),
	}
	if !slices.Equal(got.Provider.Incoming, wantIn) {
		t.Errorf("incoming =\n%+v\nwant\n%+v", got.Provider.Incoming, wantIn)
	}
	if !slices.Equal(got.Provider.Outgoing, wantOut) {
		t.Errorf("outgoing =\n%+v\nwant\n%+v", got.Provider.Outgoing, wantOut)
	}
	for _, s := range slices.Concat(got.Provider.Incoming, got.Provider.Outgoing) {
		if s.Port == 1143 || s.Port == 10025 {
			t.Errorf("plaintext listener advertised: %+v", s)
		}
	}
}

func TestClientConfigLocalPartAndHostAsDomain(t *testing.T) {
	s := Settings{Host: "mail.example.edu", Listeners: []Listener{{config.ProtocolIMAP, 993, config.TLSImplicit}}}
	out, err := ClientConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	var got testClientConfig
	if err := xml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Provider.ID != "mail.example.edu" || got.Provider.DisplayName != "mail.example.edu" {
		t.Errorf("provider %q, displayName %q: want the host", got.Provider.ID, got.Provider.DisplayName)
	}
	if len(got.Provider.Incoming) != 1 || got.Provider.Incoming[0].Username != "%EMAILLOCALPART%" || len(got.Provider.Outgoing) != 0 {
		t.Errorf("servers %+v %+v", got.Provider.Incoming, got.Provider.Outgoing)
	}
}

func TestClientConfigEscapes(t *testing.T) {
	s := Settings{Host: "mail.example.edu", DisplayName: `A & B <"Uni">`, Listeners: []Listener{{config.ProtocolIMAP, 993, config.TLSImplicit}}}
	out, err := ClientConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	var got testClientConfig
	if err := xml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Provider.DisplayName != s.DisplayName {
		t.Errorf("displayName = %q", got.Provider.DisplayName)
	}
}

func TestClientConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Settings
		is   error
	}{
		{"only plaintext", Settings{Host: "h", Listeners: []Listener{{config.ProtocolIMAP, 143, config.TLSNone}}}, ErrNoListener},
		{"only submission", Settings{Host: "h", Listeners: []Listener{{config.ProtocolSubmission, 465, config.TLSImplicit}}}, ErrNoListener},
		{"no host", Settings{Listeners: []Listener{{config.ProtocolIMAP, 993, config.TLSImplicit}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ClientConfig(tc.s)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("ClientConfig() = %v, want an error (%v)", err, tc.is)
			}
		})
	}
}
