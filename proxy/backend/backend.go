package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/kanmon-mail/kanmon/config"
)

// maxBackendLineBytes bounds one response line from the backend during
// login. Capability lists are the longest lines seen there; RFC 7162 §4
// recommends accepting at least 8192 octets, so allow well above that.
const maxBackendLineBytes = 64 << 10

// Credentials are what kanmon presents at the backend with SASL PLAIN
// (RFC 4616): Authzid is the user to act as (empty for a passthrough login),
// Authcid and Password the identity that authenticates.
type Credentials struct {
	Authzid, Authcid, Password string
	// Client is the client the login is for, told to the backend as its
	// forward_client_ip says; the zero value forwards nothing.
	Client ClientInfo
}

// LoginError is a failed backend login. Its Error text is internal: it goes
// to the log, never to the client.
type LoginError struct {
	// AuthFailed is true only when the backend said, definitely, that the
	// credentials are wrong. Timeouts, refusals to talk, temporary codes
	// ([UNAVAILABLE], [-ERR [SYS/TEMP]]…) leave it false.
	AuthFailed bool
	// Detail is the internal reason ("backend replied NO [UNAVAILABLE]").
	Detail string
	// Err is the underlying cause, if any.
	Err error
}

func (e *LoginError) Error() string {
	if e.Err != nil {
		return e.Detail + ": " + e.Err.Error()
	}
	return e.Detail
}

func (e *LoginError) Unwrap() error { return e.Err }

// unavailable builds a non-definite LoginError.
func unavailable(detail string, err error) *LoginError {
	return &LoginError{Detail: detail, Err: err}
}

// Backend dials one protocol's mail server and logs into it.
type Backend struct {
	// Protocol is imap, pop3 or submission.
	Protocol string
	// Address is the server's host:port.
	Address string
	// TLSMode is none, starttls or implicit.
	TLSMode string
	// TLSConfig verifies the server's certificate.
	TLSConfig *tls.Config
	// MasterUser and MasterPassword log in on behalf of passcode users.
	MasterUser, MasterPassword string
	// Timeout bounds dial, TLS and login together.
	Timeout time.Duration
	// ForwardClientIP is how the client's address is told to the server:
	// config.ForwardID, ForwardXCLIENT, ForwardPROXY or ForwardNone ("" is
	// none).
	ForwardClientIP string
}

// NewBackend builds a Backend from its config section.
func NewBackend(protocol string, c *config.Backend) (*Backend, error) {
	tc := &tls.Config{
		ServerName:         c.ServerName,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // an explicit, logged admin choice
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("backend.%s: ca_file: %w", protocol, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("backend.%s: ca_file %s holds no PEM certificate", protocol, c.CAFile)
		}
		tc.RootCAs = pool
	}
	return &Backend{
		Protocol:        protocol,
		Address:         c.Address,
		TLSMode:         c.TLS,
		TLSConfig:       tc,
		MasterUser:      c.MasterUser,
		MasterPassword:  c.MasterPassword,
		Timeout:         c.Timeout.Duration,
		ForwardClientIP: c.ForwardClientIP,
	}, nil
}

// MasterCredentials are the credentials for acting as user.
func (b *Backend) MasterCredentials(user string) Credentials {
	return Credentials{Authzid: user, Authcid: b.MasterUser, Password: b.MasterPassword}
}

// backendConn is a connection to the backend during login.
type backendConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// dial opens the TCP connection (and TLS, when implicit) with a deadline
// covering the whole login, for a client kanmon does not know (see
// dialClient).
func (b *Backend) dial(ctx context.Context) (*backendConn, error) {
	return b.dialClient(ctx, ClientInfo{})
}

// dialClient is dial for client: with forward_client_ip = "proxy" a PROXY
// v2 header naming client is written first, before any TLS (a LOCAL
// header when client is unknown).
func (b *Backend) dialClient(ctx context.Context, client ClientInfo) (*backendConn, error) {
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", b.Address)
	if err != nil {
		return nil, unavailable("backend dial failed", err)
	}
	_ = conn.SetDeadline(time.Now().Add(b.Timeout))
	if b.forwardMode() == config.ForwardPROXY {
		hdr, err := proxyV2Header(client)
		if err == nil {
			_, err = conn.Write(hdr)
		}
		if err != nil {
			conn.Close()
			return nil, unavailable("sending the PROXY header to the backend", err)
		}
	}
	if b.TLSMode == config.TLSImplicit {
		tc := tls.Client(conn, b.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, unavailable("backend TLS handshake failed", err)
		}
		conn = tc
	}
	return &backendConn{conn: conn, br: bufio.NewReaderSize(conn, 4096)}, nil
}

// startTLS upgrades the connection after the server agreed to STARTTLS. Any
// byte the server sent after its OK would be read as if protected by TLS, so
// it is refused (the backend-side twin of CVE-2011-0411).
func (b *Backend) startTLS(ctx context.Context, bc *backendConn) error {
	if bc.br.Buffered() > 0 {
		return unavailable("backend sent data after its STARTTLS reply", nil)
	}
	tc := tls.Client(bc.conn, b.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return unavailable("backend STARTTLS handshake failed", err)
	}
	bc.conn = tc
	bc.br = bufio.NewReaderSize(tc, 4096)
	return nil
}

// readLine reads one CRLF line without its line ending.
func (bc *backendConn) readLine() (string, error) {
	var line []byte
	for {
		chunk, err := bc.br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxBackendLineBytes {
			return "", errors.New("backend line too long")
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line), nil
}

// writeLine sends one line with CRLF.
func (bc *backendConn) writeLine(s string) error {
	_, err := bc.conn.Write([]byte(s + "\r\n"))
	return err
}

// handOver ends the login phase: the connection gets its relay deadlines
// back and any bytes read past the login become Pending.
func (bc *backendConn) handOver() Endpoint {
	_ = bc.conn.SetDeadline(time.Time{})
	var pending []byte
	if n := bc.br.Buffered(); n > 0 {
		buf, _ := bc.br.Peek(n)
		pending = append([]byte(nil), buf...)
	}
	return Endpoint{Conn: bc.conn, Pending: pending}
}
