package mailsetup

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/config"
)

// Namespaces of Outlook's plain-XML ("POX") autodiscover, MS-OXDSCLI
// §2.2.3 (request) and §2.2.4 (response).
const (
	// RequestNamespace is the namespace of the request's Autodiscover
	// element.
	RequestNamespace = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
	// ResponseNamespace is the namespace of the response's Autodiscover
	// element.
	ResponseNamespace = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	// OutlookResponseSchema is the only AcceptableResponseSchema served:
	// the namespace of the settings Response element.
	OutlookResponseSchema = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

// MaxAutodiscoverRequest bounds an autodiscover request body, in octets.
// MS-OXDSCLI §2.2.3 sets no limit; Outlook's request is about 350 octets
// with an address of at most 320 (RFC 5321 §4.5.3.1), so 16 KiB leaves
// room for whitespace and comments and nothing for abuse.
const MaxAutodiscoverRequest = 16 << 10

// The reasons a request is refused, for errors.Is. Their texts are short
// and fixed, safe to send back to the client.
var (
	// ErrMalformedRequest is a body that is not a well-formed
	// autodiscover request.
	ErrMalformedRequest = errors.New("malformed autodiscover request")
	// ErrRequestTooLarge is a body over MaxAutodiscoverRequest.
	ErrRequestTooLarge = errors.New("autodiscover request too large")
	// ErrMissingAddress is a request without an EMailAddress.
	ErrMissingAddress = errors.New("autodiscover request has no email address")
	// ErrInvalidAddress is an EMailAddress that is not an address.
	ErrInvalidAddress = errors.New("invalid email address")
	// ErrUnsupportedSchema is a request for another response schema than
	// OutlookResponseSchema (the ActiveSync "mobilesync" one, say).
	ErrUnsupportedSchema = errors.New("unsupported autodiscover response schema")
)

// RequestError is why ParseAutodiscoverRequest refused a request.
type RequestError struct {
	// Reason is one of the Err variables above; its text is safe to send
	// to the client.
	Reason error
	// Err is the underlying error, for the log only; may be nil.
	Err error
}

// Error is the reason and the underlying error, for the log.
func (e *RequestError) Error() string {
	if e.Err == nil {
		return e.Reason.Error()
	}
	return e.Reason.Error() + ": " + e.Err.Error()
}

// Unwrap gives errors.Is and errors.As both the reason and the cause.
func (e *RequestError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}

// ClientText is the short text to answer the client with.
func (e *RequestError) ClientText() string { return e.Reason.Error() }

// Code is the POX error code for the refusal (MS-OXDSCLI §2.2.4.1.1.3,
// the ErrorCode of an Error).
func (e *RequestError) Code() ErrorCode {
	if errors.Is(e.Reason, ErrUnsupportedSchema) {
		return ErrorCodeUnsupportedSchema
	}
	return ErrorCodeInvalidRequest
}

// autodiscoverRequest is the request body. Fields match in any namespace;
// the root's namespace is checked by hand.
type autodiscoverRequest struct {
	XMLName xml.Name
	Request struct {
		EMailAddress             *string `xml:"EMailAddress"`
		AcceptableResponseSchema *string `xml:"AcceptableResponseSchema"`
	} `xml:"Request"`
}

// ParseAutodiscoverRequest reads an Outlook autodiscover request of at most
// MaxAutodiscoverRequest octets and returns its email address, trimmed of
// surrounding space. It refuses, with a *RequestError, a body that is too
// large, not well-formed XML, not an Autodiscover element in
// RequestNamespace (or none), without an EMailAddress or with one that is
// not an address, or whose AcceptableResponseSchema is present and not
// OutlookResponseSchema.
func ParseAutodiscoverRequest(r io.Reader) (email string, err error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxAutodiscoverRequest+1))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", &RequestError{Reason: ErrRequestTooLarge}
		}
		return "", &RequestError{Reason: ErrMalformedRequest, Err: fmt.Errorf("reading request: %w", err)}
	}
	if len(data) > MaxAutodiscoverRequest {
		return "", &RequestError{Reason: ErrRequestTooLarge}
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	var req autodiscoverRequest
	if err := dec.Decode(&req); err != nil {
		return "", &RequestError{Reason: ErrMalformedRequest, Err: err}
	}
	if err := onlyMisc(dec); err != nil {
		return "", &RequestError{Reason: ErrMalformedRequest, Err: err}
	}
	switch {
	case req.XMLName.Local != "Autodiscover":
		return "", &RequestError{Reason: ErrMalformedRequest, Err: fmt.Errorf("root element %q, want Autodiscover", req.XMLName.Local)}
	case req.XMLName.Space != RequestNamespace && req.XMLName.Space != "":
		return "", &RequestError{Reason: ErrUnsupportedSchema, Err: fmt.Errorf("request namespace %q", req.XMLName.Space)}
	}
	if s := req.Request.AcceptableResponseSchema; s != nil && strings.TrimSpace(*s) != OutlookResponseSchema {
		return "", &RequestError{Reason: ErrUnsupportedSchema, Err: fmt.Errorf("AcceptableResponseSchema %q", truncate(*s))}
	}
	if req.Request.EMailAddress == nil || strings.TrimSpace(*req.Request.EMailAddress) == "" {
		return "", &RequestError{Reason: ErrMissingAddress}
	}
	email = strings.TrimSpace(*req.Request.EMailAddress)
	if err := checkAddress(email); err != nil {
		return "", &RequestError{Reason: ErrInvalidAddress, Err: err}
	}
	return email, nil
}

// onlyMisc reads dec to its end and fails on anything but whitespace,
// comments and processing instructions after the root element.
func onlyMisc(dec *xml.Decoder) error {
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return errors.New("text after the root element")
			}
		default:
			return errors.New("content after the root element")
		}
	}
}

// truncate shortens client text for a log line.
func truncate(s string) string {
	const maxLogText = 100
	if len(s) > maxLogText {
		return s[:maxLogText] + "..."
	}
	return s
}

// POX response elements (MS-OXDSCLI §2.2.4).
type (
	autodiscoverResponse struct {
		XMLName  xml.Name        `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
		Response outlookResponse `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
	}
	outlookResponse struct {
		User    autodiscoverUser    `xml:"User"`
		Account autodiscoverAccount `xml:"Account"`
	}
	autodiscoverUser struct {
		DisplayName             string `xml:"DisplayName"`
		AutoDiscoverSMTPAddress string `xml:"AutoDiscoverSMTPAddress"`
	}
	autodiscoverAccount struct {
		AccountType string                 `xml:"AccountType"`
		Action      string                 `xml:"Action"`
		Protocols   []autodiscoverProtocol `xml:"Protocol"`
	}
	autodiscoverProtocol struct {
		Type           string `xml:"Type"`
		Server         string `xml:"Server"`
		Port           int    `xml:"Port"`
		LoginName      string `xml:"LoginName"`
		DomainRequired string `xml:"DomainRequired"`
		SPA            string `xml:"SPA"`
		SSL            string `xml:"SSL"`
		Encryption     string `xml:"Encryption"`
		AuthRequired   string `xml:"AuthRequired"`
		UsePOPAuth     string `xml:"UsePOPAuth,omitempty"`
		SMTPLast       string `xml:"SMTPLast,omitempty"`
	}
)

// Values of the POX response (MS-OXDSCLI §2.2.4, the Account and Protocol
// elements).
const (
	accountTypeEmail = "email"
	actionSettings   = "settings"
	on, off          = "on", "off"
	// Encryption overrides SSL where a client reads it: "SSL" is TLS from
	// the first byte, "TLS" is STARTTLS.
	encryptionSSL = "SSL"
	encryptionTLS = "TLS"
)

// Autodiscover returns Outlook's autodiscover answer for email: an email
// account with one Protocol each for IMAP, POP3 and SMTP (submission), in
// that order, each the preferred listener of its protocol (implicit TLS
// before STARTTLS). LoginName is email or its local part, per s.UserForm.
// SSL is always on: it means "use TLS" to clients that do not read
// Encryption, and Thunderbird, which does not, then tells STARTTLS from
// implicit TLS by the standard port. Encryption is SSL for implicit TLS
// and TLS for STARTTLS. It is an error when s is invalid, email is not an
// address, or s has no IMAP or POP3 listener with TLS.
func Autodiscover(s Settings, email string) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("autodiscover: %w", err)
	}
	if err := checkAddress(email); err != nil {
		return nil, fmt.Errorf("autodiscover: address %q: %w", truncate(email), err)
	}
	acct := autodiscoverAccount{AccountType: accountTypeEmail, Action: actionSettings}
	protocol := func(typ string, l Listener) autodiscoverProtocol {
		p := autodiscoverProtocol{
			Type:           typ,
			Server:         s.Host,
			Port:           l.Port,
			LoginName:      s.UserForm.LoginName(email),
			DomainRequired: off,
			SPA:            off,
			SSL:            on,
			Encryption:     encryptionSSL,
			AuthRequired:   on,
		}
		if l.TLS == config.TLSStartTLS {
			p.Encryption = encryptionTLS
		}
		if typ == "SMTP" {
			p.UsePOPAuth, p.SMTPLast = off, off
		}
		return p
	}
	for _, x := range []struct{ proto, typ string }{
		{config.ProtocolIMAP, "IMAP"},
		{config.ProtocolPOP3, "POP3"},
		{config.ProtocolSubmission, "SMTP"},
	} {
		if l, ok := s.first(x.proto); ok {
			acct.Protocols = append(acct.Protocols, protocol(x.typ, l))
		}
	}
	if len(acct.Protocols) == 0 || acct.Protocols[0].Type == "SMTP" {
		return nil, fmt.Errorf("autodiscover: imap or pop3: %w", ErrNoListener)
	}
	out, err := marshalXML(autodiscoverResponse{Response: outlookResponse{
		User:    autodiscoverUser{DisplayName: email, AutoDiscoverSMTPAddress: email},
		Account: acct,
	}})
	if err != nil {
		return nil, fmt.Errorf("autodiscover: %w", err)
	}
	return out, nil
}

// ErrorCode is a POX autodiscover error code (MS-OXDSCLI §2.2.4.1.1.3, the
// ErrorCode of an Error).
type ErrorCode int

// The error codes.
const (
	// ErrorCodeNotFound: the address cannot be found.
	ErrorCodeNotFound ErrorCode = 500
	// ErrorCodeNoSettings: the address is known but has no settings.
	ErrorCodeNoSettings ErrorCode = 501
	// ErrorCodeInvalidRequest: the request was not well formed.
	ErrorCodeInvalidRequest ErrorCode = 600
	// ErrorCodeUnsupportedSchema: no settings of the requested schema.
	ErrorCodeUnsupportedSchema ErrorCode = 601
	// ErrorCodeConfiguration: the server's own configuration is broken.
	ErrorCodeConfiguration ErrorCode = 602
	// ErrorCodeInternal: an internal error.
	ErrorCodeInternal ErrorCode = 603
)

// Message is the code's Message text.
func (c ErrorCode) Message() string {
	switch c {
	case ErrorCodeNotFound:
		return "The email address can't be found."
	case ErrorCodeNoSettings, ErrorCodeConfiguration:
		return "Bad Address"
	case ErrorCodeInvalidRequest:
		return "Invalid Request"
	case ErrorCodeUnsupportedSchema:
		return "Provider is not available"
	case ErrorCodeInternal:
		return "Internal Server Error"
	}
	return ""
}

// errorTimeLayout is the Error element's Time attribute, as Exchange
// writes it: hours to seven decimals of seconds.
const errorTimeLayout = "15:04:05.0000000"

type (
	autodiscoverErrorDoc struct {
		XMLName  xml.Name                  `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
		Response autodiscoverErrorResponse `xml:"Response"`
	}
	autodiscoverErrorResponse struct {
		Error autodiscoverErrorElem `xml:"Error"`
	}
	autodiscoverErrorElem struct {
		Time      string   `xml:"Time,attr"`
		ID        string   `xml:"Id,attr"`
		ErrorCode int      `xml:"ErrorCode"`
		Message   string   `xml:"Message"`
		DebugData struct{} `xml:"DebugData"`
	}
)

// AutodiscoverError returns the POX error answer with code at now. The Id
// attribute is a hash of host, as MS-OXDSCLI §2.2.4.1.1.3 has it (a hash
// of the server name). Outlook reads it from a 200 response; the
// handler of this package answers malformed requests with a plain 400
// instead, which every client treats as "no settings here".
func AutodiscoverError(host string, code ErrorCode, now time.Time) ([]byte, error) {
	msg := code.Message()
	if msg == "" {
		return nil, fmt.Errorf("autodiscover error: unknown code %d", int(code))
	}
	h := fnv.New32a()
	_, _ = io.WriteString(h, host) // a hash.Hash never fails to write
	doc := autodiscoverErrorDoc{Response: autodiscoverErrorResponse{Error: autodiscoverErrorElem{
		Time:      now.UTC().Format(errorTimeLayout),
		ID:        strconv.FormatUint(uint64(h.Sum32()), 10),
		ErrorCode: int(code),
		Message:   msg,
	}}}
	out, err := marshalXML(doc)
	if err != nil {
		return nil, fmt.Errorf("autodiscover error: %w", err)
	}
	return out, nil
}
