package mailsetup

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/smallstep/pkcs7"
	"howett.net/plist"

	"github.com/kanmon-mail/kanmon/config"
)

// Values of Apple's configuration profiles (Device Management, "Mail"
// payload: https://developer.apple.com/documentation/devicemanagement/mail).
const (
	// payloadTypeConfiguration is the type of the top-level profile.
	payloadTypeConfiguration = "Configuration"
	// payloadTypeMail is the type of a Mail (IMAP/POP) account payload.
	payloadTypeMail = "com.apple.mail.managed"
	// payloadVersion is the only version of both payloads.
	payloadVersion = 1
	// emailTypeIMAP is EmailAccountType for an IMAP account.
	emailTypeIMAP = "EmailTypeIMAP"
	// emailAuthPassword is password authentication inside TLS.
	emailAuthPassword = "EmailAuthPassword"
	// identifierFallback prefixes payload identifiers when neither the
	// host nor the domain is a DNS name.
	identifierFallback = "kanmon"
	// MobileConfigContentType is the media type iOS and macOS install a
	// profile from.
	MobileConfigContentType = "application/x-apple-aspen-config"
)

// Profile is one user's Apple Mail account profile.
type Profile struct {
	// Settings are the mail host and listeners; the IMAP listener and the
	// submission listener with implicit TLS are taken, else those with
	// STARTTLS.
	Settings
	// Email is the user's address. Required.
	Email string
	// User is the login name. Empty: Email or its local part, per
	// Settings.UserForm.
	User string
	// Passcode is the app passcode the account logs in with: the profile
	// file is then a secret. Empty: the device asks for the password
	// when the profile is installed.
	Passcode string
	// AccountName is the name of the passcode ("iPhone"), shown in the
	// profile's description.
	AccountName string
	// FullName is the sender's name in sent mail. Empty: the device asks.
	FullName string
	// Identifier is the reverse-DNS prefix of the payload identifiers,
	// e.g. "edu.example.mail". Empty: the host's labels reversed.
	Identifier string
}

// configurationProfile is the top-level plist. Field names are the keys.
type configurationProfile struct {
	PayloadContent           []mailPayload
	PayloadDescription       string
	PayloadDisplayName       string
	PayloadIdentifier        string
	PayloadOrganization      string
	PayloadRemovalDisallowed bool
	PayloadType              string
	PayloadUUID              string
	PayloadVersion           int
}

// mailPayload is the com.apple.mail.managed payload. Field names are the
// keys but where a tag says otherwise.
type mailPayload struct {
	PayloadDescription  string
	PayloadDisplayName  string
	PayloadIdentifier   string
	PayloadOrganization string
	PayloadType         string
	PayloadUUID         string
	PayloadVersion      int

	EmailAccountDescription string
	EmailAccountName        string `plist:",omitempty"`
	EmailAccountType        string
	EmailAddress            string

	IncomingMailServerAuthentication string
	IncomingMailServerHostName       string
	IncomingMailServerPortNumber     int
	IncomingMailServerUseSSL         bool
	IncomingMailServerUsername       string
	IncomingPassword                 string `plist:",omitempty"`

	OutgoingMailServerAuthentication       string
	OutgoingMailServerHostName             string
	OutgoingMailServerPortNumber           int
	OutgoingMailServerUseSSL               bool
	OutgoingMailServerUsername             string
	OutgoingPasswordSameAsIncomingPassword bool

	PreventMove               bool
	PreventAppSheet           bool
	SMIMEEnabled              bool
	DisableMailRecentsSyncing bool `plist:"disableMailRecentsSyncing"`
}

// MobileConfig returns an unsigned XML-plist configuration profile with
// one IMAP Mail account for p. UseSSL is on for both servers: the device
// uses TLS from the first byte on an implicit-TLS port and STARTTLS on a
// STARTTLS one, and never logs in without TLS. The passcode goes in as
// IncomingPassword and serves for SMTP too. The profile identifier is the
// same for every profile of one address, so a new profile replaces the old
// one on the device; the UUIDs are random. It is an error when p.Settings
// or p.Email is invalid or there is no IMAP or no submission listener
// with TLS.
func MobileConfig(p Profile) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("mobileconfig: %w", err)
	}
	if err := checkAddress(p.Email); err != nil {
		return nil, fmt.Errorf("mobileconfig: address %q: %w", truncate(p.Email), err)
	}
	imap, ok := p.first(config.ProtocolIMAP)
	if !ok {
		return nil, fmt.Errorf("mobileconfig: imap: %w", ErrNoListener)
	}
	smtp, ok := p.first(config.ProtocolSubmission)
	if !ok {
		return nil, fmt.Errorf("mobileconfig: submission: %w", ErrNoListener)
	}
	prefix := p.Identifier
	if prefix == "" {
		prefix = reverseDNS(p.Host, p.Domain)
	}
	if err := checkIdentifier(prefix); err != nil {
		return nil, fmt.Errorf("mobileconfig: identifier %q: %w", prefix, err)
	}
	user := cmp.Or(p.User, p.UserForm.LoginName(p.Email))
	profileUUID, err := newUUID()
	if err != nil {
		return nil, fmt.Errorf("mobileconfig: %w", err)
	}
	mailUUID, err := newUUID()
	if err != nil {
		return nil, fmt.Errorf("mobileconfig: %w", err)
	}
	sum := sha256.Sum256([]byte(strings.ToLower(p.Email)))
	id := prefix + ".mailsetup." + hex.EncodeToString(sum[:8])
	name := p.name()
	desc := fmt.Sprintf("Sets up the mail account %s on %s.", p.Email, p.Host)
	if p.AccountName != "" {
		desc = fmt.Sprintf("Sets up the mail account %s on %s with the app passcode “%s”.", p.Email, p.Host, p.AccountName)
	}
	mail := mailPayload{
		PayloadDescription:  desc,
		PayloadDisplayName:  name + " mail",
		PayloadIdentifier:   id + ".mail",
		PayloadOrganization: name,
		PayloadType:         payloadTypeMail,
		PayloadUUID:         mailUUID,
		PayloadVersion:      payloadVersion,

		EmailAccountDescription: name,
		EmailAccountName:        p.FullName,
		EmailAccountType:        emailTypeIMAP,
		EmailAddress:            p.Email,

		IncomingMailServerAuthentication: emailAuthPassword,
		IncomingMailServerHostName:       p.Host,
		IncomingMailServerPortNumber:     imap.Port,
		IncomingMailServerUseSSL:         true,
		IncomingMailServerUsername:       user,
		IncomingPassword:                 p.Passcode,

		OutgoingMailServerAuthentication:       emailAuthPassword,
		OutgoingMailServerHostName:             p.Host,
		OutgoingMailServerPortNumber:           smtp.Port,
		OutgoingMailServerUseSSL:               true,
		OutgoingMailServerUsername:             user,
		OutgoingPasswordSameAsIncomingPassword: true,
	}
	prof := configurationProfile{
		PayloadContent:      []mailPayload{mail},
		PayloadDescription:  desc,
		PayloadDisplayName:  fmt.Sprintf("%s mail (%s)", name, p.Email),
		PayloadIdentifier:   id,
		PayloadOrganization: name,
		PayloadType:         payloadTypeConfiguration,
		PayloadUUID:         profileUUID,
		PayloadVersion:      payloadVersion,
	}
	out, err := plist.MarshalIndent(prof, plist.XMLFormat, "\t")
	if err != nil {
		return nil, fmt.Errorf("mobileconfig: encoding plist: %w", err)
	}
	return out, nil
}

// reverseDNS is host's labels reversed and lower-cased ("mail.example.edu"
// → "edu.example.mail"), else domain's when host is an IP address, else
// identifierFallback.
func reverseDNS(host, domain string) string {
	for _, name := range []string{host, domain} {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if _, err := netip.ParseAddr(name); err == nil || checkHost(name) != nil {
			continue // an IP address, empty or invalid
		}
		labels := strings.Split(name, ".")
		slices.Reverse(labels)
		return strings.Join(labels, ".")
	}
	return identifierFallback
}

// checkIdentifier accepts dot-separated labels of letters, digits and
// hyphens.
func checkIdentifier(s string) error {
	if s == "" || len(s) > MaxHostLength {
		return fmt.Errorf("want 1 to %d octets", MaxHostLength)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return errors.New("want letters, digits, hyphens and dots")
			}
		}
	}
	return nil
}

// newUUID is a random (version 4) UUID in upper case, as Apple writes
// them (RFC 9562 §5.4).
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random UUID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}

// SignProfile signs a profile as CMS SignedData (RFC 5652; PKCS #7) with
// the content attached, DER-encoded, as iOS and macOS install it: signed
// by cert's leaf with its RSA or ECDSA key and a SHA-256 digest, carrying
// the rest of cert's chain (the intermediates) for the device to build the
// path to a root it trusts. A TLS server certificate from a public CA,
// such as the portal's, is the usual signer: the device then shows the
// profile as "Verified" with the certificate's name.
func SignProfile(data []byte, cert *tls.Certificate) ([]byte, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("sign profile: no certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("sign profile: parsing certificate: %w", err)
		}
	}
	var key crypto.Signer
	switch k := cert.PrivateKey.(type) {
	case *rsa.PrivateKey:
		key = k
	case *ecdsa.PrivateKey:
		key = k
	default:
		return nil, fmt.Errorf("sign profile: private key %T: want RSA or ECDSA", cert.PrivateKey)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("sign profile: private key does not match the certificate")
	}
	sd, err := pkcs7.NewSignedData(data)
	if err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(leaf, key, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	for i, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("sign profile: parsing chain certificate %d: %w", i+1, err)
		}
		sd.AddCertificate(c)
	}
	out, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	return out, nil
}
