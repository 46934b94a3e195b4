package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/kanmon-mail/kanmon/config"
)

// ErrPasswordRejected is CheckPassword's error when the backend said,
// definitely, that the password is wrong. Any other error means the
// backend could not be asked (down, slow, a temporary refusal).
var ErrPasswordRejected = errors.New("backend rejected the password")

// logoutTimeout bounds the LOGOUT after a password check: the answer
// does not matter, only that the backend's session ends cleanly.
const logoutTimeout = 2 * time.Second

// CheckPassword checks user's own password at the IMAP backend: a
// passthrough login (SASL PLAIN with the user's credentials, exactly as a
// passthrough IMAP login makes it, forwarding client as forward_client_ip
// says), then LOGOUT. It returns nil when the backend accepted the
// password, an error wrapping ErrPasswordRejected when it definitely
// refused it, and any other error when the backend could not tell. The
// password never appears in an error.
func (b *Backend) CheckPassword(ctx context.Context, user, password string, client ClientInfo) error {
	if b.Protocol != config.ProtocolIMAP {
		return fmt.Errorf("checking a password: backend %s is not IMAP", b.Protocol)
	}
	login, err := b.Login(ctx, Credentials{Authcid: user, Password: password, Client: client})
	if err != nil {
		var le *LoginError
		if errors.As(err, &le) && le.AuthFailed {
			return fmt.Errorf("%w: %s", ErrPasswordRejected, le.Detail)
		}
		return fmt.Errorf("checking the password at the IMAP backend: %w", err)
	}
	imapLogout(login.Conn)
	return nil
}

// imapLogout sends LOGOUT on a logged-in backend connection, waits briefly
// for the tagged answer (RFC 9051 §6.1.3: "* BYE" first) and closes it.
// Errors are ignored: the login already told what was asked.
func imapLogout(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(logoutTimeout))
	if _, err := conn.Write([]byte(imapTagLogout + " LOGOUT\r\n")); err != nil {
		return
	}
	// Read until the tagged reply or an error; the lines are short and
	// few, and the deadline bounds a backend that says nothing.
	var buf [4096]byte
	var seen strings.Builder
	for seen.Len() < maxBackendLineBytes {
		n, err := conn.Read(buf[:])
		seen.Write(buf[:n])
		if strings.Contains(seen.String(), "\n"+imapTagLogout+" ") || strings.HasPrefix(seen.String(), imapTagLogout+" ") {
			return
		}
		if err != nil {
			return
		}
	}
}
