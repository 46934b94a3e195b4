// Package selfsigned makes throwaway TLS certificates for `kanmon demo` and
// for tests. Nothing it makes is ever written into the repository.
package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Cert is a freshly made certificate in both parsed and PEM form.
type Cert struct {
	// TLS is ready for tls.Config.Certificates.
	TLS tls.Certificate
	// CertPEM and KeyPEM are the same certificate and key as PEM.
	CertPEM, KeyPEM []byte
	// Pool trusts exactly this certificate, for clients.
	Pool *x509.CertPool
}

// New makes a self-signed ECDSA P-256 certificate valid for a day for the
// given host names and IP addresses.
func New(hosts ...string) (*Cert, error) {
	return NewUntil(time.Now().Add(24*time.Hour), hosts...)
}

// NewUntil is New with the certificate valid until notAfter (whole
// seconds: a certificate keeps no fraction).
func NewUntil(notAfter time.Time, hosts ...string) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 96))
	if err != nil {
		return nil, fmt.Errorf("selfsigned: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kanmon self-signed"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: key: %w", err)
	}
	c := &Cert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		Pool:    x509.NewCertPool(),
	}
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	c.Pool.AddCert(parsed)
	return c, nil
}

// WriteFiles writes the certificate and key into dir as certName and
// keyName (the key with mode 0600) and returns their paths.
func (c *Cert) WriteFiles(dir, certName, keyName string) (certPath, keyPath string, err error) {
	certPath = filepath.Join(dir, certName)
	keyPath = filepath.Join(dir, keyName)
	if err := os.WriteFile(certPath, c.CertPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("selfsigned: %w", err)
	}
	if err := os.WriteFile(keyPath, c.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("selfsigned: %w", err)
	}
	return certPath, keyPath, nil
}
