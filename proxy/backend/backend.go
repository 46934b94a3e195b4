// Package backend logs into the mail server behind kanmon: IMAP, POP3 or
// SMTP submission, over plain TCP, STARTTLS or implicit TLS, with SASL
// PLAIN as the master user on behalf of a passcode user or with the
// user's own password (passthrough). It tells the server who the client
// is as forward_client_ip says (IMAP ID, XCLIENT, a PROXY v2 header), and
// hands the logged-in connection back as a Login, ready to relay.
//
// Every failure is a *LoginError whose text is for the log only; the one
// line a client may see (a POP3 [IN-USE] or [LOGIN-DELAY]) is kept apart,
// sanitised, in ClientLine.
package backend

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/lineio"
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

// Stage is where a backend login failed, for the metrics.
type Stage uint8

const (
	// StageLogin is the login conversation itself: greeting, commands,
	// authentication.
	StageLogin Stage = iota
	// StageDial is the TCP connection (or the PROXY header on it).
	StageDial
	// StageTLS is the TLS handshake, implicit or after STARTTLS/STLS, and
	// the STARTTLS/STLS exchange before it.
	StageTLS
)

// LoginError is a failed backend login. Its Error text is internal: it goes
// to the log, never to the client.
type LoginError struct {
	// AuthFailed is true only when the backend said, definitely, that the
	// credentials are wrong. Timeouts, refusals to talk, temporary codes
	// ([UNAVAILABLE], [-ERR [SYS/TEMP]]…) leave it false.
	AuthFailed bool
	// Stage is where the login failed.
	Stage Stage
	// Detail is the internal reason ("backend replied NO [UNAVAILABLE]").
	Detail string
	// ClientLine, when not empty, is the backend's own refusal for the
	// client to see in place of the front's temporary-failure reply: a
	// POP3 "-ERR [IN-USE] ..." or "-ERR [LOGIN-DELAY] ..." (RFC 2449
	// §8.1), which tells the client to retry later, not to ask for a new
	// password. It is reduced to printable ASCII and to the RFC 2449 §4
	// response length.
	ClientLine string
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

// unavailable builds a non-definite LoginError of the login stage.
func unavailable(detail string, err error) *LoginError {
	return &LoginError{Detail: detail, Err: err}
}

// tlsFailed builds a non-definite LoginError of the TLS stage.
func tlsFailed(detail string, err error) *LoginError {
	return &LoginError{Stage: StageTLS, Detail: detail, Err: err}
}

// rejected builds the definite failure: the backend refused the
// credentials.
func rejected(detail string) *LoginError {
	return &LoginError{AuthFailed: true, Detail: detail}
}

// Login is a logged-in backend connection, ready to relay.
type Login struct {
	// Conn is the connection, without deadlines.
	Conn net.Conn
	// Pending are the bytes read from Conn past the login, which must
	// reach the client first.
	Pending []byte
	// Capability is, for IMAP, the backend's post-login capability list
	// without the "CAPABILITY" word, for the client's tagged OK.
	Capability string
	// Extensions are, for submission, the backend's EHLO lines after its
	// name line (keyword and parameters, "SIZE 10240000"), as offered
	// before AUTH and after STARTTLS when that is configured.
	Extensions []string
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

	// extensions caches a submission backend's EHLO extensions (smtp.go).
	extensions extensionCache
}

// New builds a Backend from its config section.
func New(protocol string, c *config.Backend) (*Backend, error) {
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

// Login dials the backend and logs in with cred, in b's protocol: SASL
// PLAIN as cred says (RFC 4616), after STARTTLS or STLS when configured,
// telling the backend who the client is as forward_client_ip says. Only
// a backend's definite "wrong credentials" is a LoginError with
// AuthFailed; a failure to reach or understand the backend is not.
// Shutdown (the end of ctx) cuts a login short.
func (b *Backend) Login(ctx context.Context, cred Credentials) (*Login, error) {
	var steps func(context.Context, *conn, Credentials) (*Login, error)
	switch b.Protocol {
	case config.ProtocolIMAP:
		steps = b.loginIMAP
	case config.ProtocolPOP3:
		steps = b.loginPOP3
	case config.ProtocolSubmission:
		steps = b.loginSubmission
	default:
		return nil, unavailable("no backend login for protocol "+b.Protocol, nil)
	}
	var login *Login
	bc, err := b.converse(ctx, cred.Client, func(bc *conn) error {
		var err error
		login, err = steps(ctx, bc, cred)
		return err
	})
	if err != nil {
		return nil, err
	}
	login.Conn, login.Pending = bc.handOver()
	return login, nil
}

// converse dials the backend for client and runs steps on the
// connection, which the end of ctx (shutdown) cuts short rather than
// waiting out the timeout. On error the connection is closed.
func (b *Backend) converse(ctx context.Context, client ClientInfo, steps func(*conn) error) (*conn, error) {
	bc, err := b.dial(ctx, client)
	if err != nil {
		return nil, err
	}
	raw := bc.conn
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	defer stop()
	if err := steps(bc); err != nil {
		bc.conn.Close()
		return nil, err
	}
	return bc, nil
}

// conn is a connection to the backend during login.
type conn struct {
	conn net.Conn
	lr   *lineio.Reader
}

// dial opens the TCP connection (and TLS, when implicit) with a deadline
// covering the whole login. With forward_client_ip = "proxy" a PROXY v2
// header naming client is written first, before any TLS (a LOCAL header
// when client is unknown).
func (b *Backend) dial(ctx context.Context, client ClientInfo) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", b.Address)
	if err != nil {
		return nil, &LoginError{Stage: StageDial, Detail: "backend dial failed", Err: err}
	}
	_ = c.SetDeadline(time.Now().Add(b.Timeout))
	if b.forwardMode() == config.ForwardPROXY {
		hdr, err := proxyV2Header(client)
		if err == nil {
			_, err = c.Write(hdr)
		}
		if err != nil {
			c.Close()
			return nil, &LoginError{Stage: StageDial, Detail: "sending the PROXY header to the backend", Err: err}
		}
	}
	if b.TLSMode == config.TLSImplicit {
		tc := tls.Client(c, b.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, tlsFailed("backend TLS handshake failed", err)
		}
		c = tc
	}
	return newConn(c), nil
}

// newConn reads c's lines through a fresh buffer.
func newConn(c net.Conn) *conn {
	return &conn{conn: c, lr: lineio.NewReader(bufio.NewReaderSize(c, 4096))}
}

// startTLS upgrades the connection after the server agreed to STARTTLS. Any
// byte the server sent after its OK would be read as if protected by TLS, so
// it is refused (the backend-side twin of CVE-2011-0411).
func (b *Backend) startTLS(ctx context.Context, bc *conn) error {
	if bc.lr.Buffered().Buffered() > 0 {
		return tlsFailed("backend sent data after its STARTTLS reply", nil)
	}
	tc := tls.Client(bc.conn, b.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return tlsFailed("backend STARTTLS handshake failed", err)
	}
	*bc = *newConn(tc)
	return nil
}

// readLine reads one CRLF line without its line ending.
func (bc *conn) readLine() (string, error) {
	line, err := bc.lr.ReadLine(maxBackendLineBytes)
	if err == lineio.ErrTooLong {
		return "", fmt.Errorf("backend %w", err)
	}
	return line, err
}

// writeLine sends one line with CRLF.
func (bc *conn) writeLine(s string) error {
	_, err := bc.conn.Write([]byte(s + "\r\n"))
	return err
}

// handOver ends the login phase: the connection loses its login deadline
// and any bytes read past the login are returned as pending.
func (bc *conn) handOver() (net.Conn, []byte) {
	_ = bc.conn.SetDeadline(time.Time{})
	var pending []byte
	br := bc.lr.Buffered()
	if n := br.Buffered(); n > 0 {
		buf, _ := br.Peek(n)
		pending = append([]byte(nil), buf...)
	}
	return bc.conn, pending
}
