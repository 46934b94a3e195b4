package mailsetup

import (
	"encoding/xml"
	"fmt"

	"github.com/kanmon-mail/kanmon/config"
)

// The Thunderbird autoconfig format ("ISPDB"), version 1.1:
// https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat
const (
	// clientConfigVersion is the format version Thunderbird reads.
	clientConfigVersion = "1.1"
	// socketTypeSSL is implicit TLS in the format's words.
	socketTypeSSL = "SSL"
	// socketTypeSTARTTLS is a plaintext greeting upgraded by STARTTLS/STLS.
	socketTypeSTARTTLS = "STARTTLS"
	// authPasswordCleartext is a password sent as typed (LOGIN, PLAIN,
	// USER/PASS), inside TLS: the only kind kanmon's passcodes allow.
	authPasswordCleartext = "password-cleartext"
)

// clientConfig is the root element of the autoconfig file.
type clientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider emailProvider `xml:"emailProvider"`
}

// emailProvider describes one provider and its servers.
type emailProvider struct {
	ID               string         `xml:"id,attr"`
	Domain           string         `xml:"domain"`
	DisplayName      string         `xml:"displayName"`
	DisplayShortName string         `xml:"displayShortName"`
	Incoming         []serverConfig `xml:"incomingServer"`
	Outgoing         []serverConfig `xml:"outgoingServer"`
}

// serverConfig is one incomingServer or outgoingServer.
type serverConfig struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Username       string `xml:"username"`
	Authentication string `xml:"authentication"`
}

// ClientConfig returns Thunderbird's autoconfig file (config-v1.1.xml)
// for s, with the XML header. The IMAP servers come first, then POP3,
// each with implicit TLS before STARTTLS; then one outgoing SMTP server
// per submission listener. Thunderbird takes the first of each as the
// default. Listeners with tls = "none" are left out. It is an error when
// s is invalid or has no IMAP or POP3 listener with TLS.
func ClientConfig(s Settings) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("autoconfig: %w", err)
	}
	p := emailProvider{
		ID:               s.providerDomain(),
		Domain:           s.providerDomain(),
		DisplayName:      s.name(),
		DisplayShortName: s.name(),
	}
	server := func(typ string, l Listener) serverConfig {
		return serverConfig{
			Type:           typ,
			Hostname:       s.Host,
			Port:           l.Port,
			SocketType:     socketType(l.TLS),
			Username:       s.UserForm.Placeholder(),
			Authentication: authPasswordCleartext,
		}
	}
	for _, proto := range []string{config.ProtocolIMAP, config.ProtocolPOP3} {
		for _, l := range s.ordered(proto) {
			p.Incoming = append(p.Incoming, server(proto, l))
		}
	}
	if len(p.Incoming) == 0 {
		return nil, fmt.Errorf("autoconfig: imap or pop3: %w", ErrNoListener)
	}
	for _, l := range s.ordered(config.ProtocolSubmission) {
		p.Outgoing = append(p.Outgoing, server("smtp", l))
	}
	out, err := marshalXML(clientConfig{Version: clientConfigVersion, Provider: p})
	if err != nil {
		return nil, fmt.Errorf("autoconfig: %w", err)
	}
	return out, nil
}

// socketType is the ISPDB socketType of a listener's TLS mode.
func socketType(mode string) string {
	if mode == config.TLSImplicit {
		return socketTypeSSL
	}
	return socketTypeSTARTTLS
}

// marshalXML encodes v indented, after the XML declaration, ending in a
// newline.
func marshalXML(v any) ([]byte, error) {
	body, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding XML: %w", err)
	}
	out := make([]byte, 0, len(xml.Header)+len(body)+1)
	out = append(out, xml.Header...)
	out = append(out, body...)
	return append(out, '\n'), nil
}
