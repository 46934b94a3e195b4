package backend

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/lineio"
)

// pop3PassedCodes are the response codes of a failed backend login whose
// line reaches the client (LoginError.ClientLine): [IN-USE] (RFC 2449
// §8.1.2; Dovecot sends it when another session holds the mailbox or the
// user has too many connections) and [LOGIN-DELAY] (RFC 2449 §8.1.1).
// They speak of the mailbox, not of the credentials.
var pop3PassedCodes = map[string]bool{"IN-USE": true, "LOGIN-DELAY": true}

// loginPOP3 authenticates with AUTH PLAIN (RFC 5034, RFC 4616), with the
// response as an initial response when the command fits in a command
// line.
func (b *Backend) loginPOP3(ctx context.Context, bc *conn, cred Credentials) (*Login, error) {
	if err := b.pop3Auth(ctx, bc, cred); err != nil {
		return nil, err
	}
	return &Login{}, nil
}

// pop3Auth is loginPOP3's conversation.
func (b *Backend) pop3Auth(ctx context.Context, bc *conn, cred Credentials) error {
	greeting, err := bc.readLine()
	if err != nil {
		return unavailable("reading backend greeting", err)
	}
	if !strings.HasPrefix(greeting, "+OK") {
		return unavailable(fmt.Sprintf("backend greeting is not +OK: %.80q", greeting), nil)
	}
	if b.TLSMode == config.TLSStartTLS {
		line, err := pop3Command(bc, "STLS")
		if err != nil {
			return tlsFailed("backend STLS", err)
		}
		if !strings.HasPrefix(line, "+OK") {
			return tlsFailed(fmt.Sprintf("backend refused STLS: %.120q", line), nil)
		}
		if err := b.startTLS(ctx, bc); err != nil {
			return err
		}
	}
	if b.forwardMode() == config.ForwardXCLIENT {
		if err := pop3SendXCLIENT(bc, cred.Client); err != nil {
			return err
		}
	}
	ir := base64.StdEncoding.EncodeToString([]byte(cred.Authzid + "\x00" + cred.Authcid + "\x00" + cred.Password))
	var line string
	if cmd := "AUTH PLAIN " + ir; len(cmd)+len("\r\n") <= lineio.POP3MaxCommandLine {
		line, err = pop3Command(bc, cmd)
	} else {
		// RFC 5034 §4: an AUTH command with its initial response must
		// fit in a command line; else the response follows the "+".
		line, err = pop3Command(bc, "AUTH PLAIN")
		if err == nil && (line == "+" || strings.HasPrefix(line, "+ ")) {
			line, err = pop3Command(bc, ir)
		}
	}
	if err != nil {
		return unavailable("backend AUTH", err)
	}
	if strings.HasPrefix(line, "+OK") {
		return nil
	}
	return pop3AuthOutcome(line)
}

// pop3SendXCLIENT tells the backend who the client is with XCLIENT (see
// xclientCommand) before the login. Dovecot answers +OK whether or not it
// trusts kanmon (login_trusted_networks) and ignores the command when it
// does not; anything but +OK fails the login, since forwarding was asked
// for.
func pop3SendXCLIENT(bc *conn, c ClientInfo) error {
	cmd := xclientCommand(c, false)
	if cmd == "" {
		return nil
	}
	line, err := pop3Command(bc, cmd)
	if err != nil {
		return unavailable("backend XCLIENT", err)
	}
	if !strings.HasPrefix(line, "+OK") {
		return unavailable(fmt.Sprintf("backend refused XCLIENT (forward_client_ip = \"xclient\"): %.120q", line), nil)
	}
	return nil
}

// pop3Command sends one line and reads the one-line reply.
func pop3Command(bc *conn, line string) (string, error) {
	if err := bc.writeLine(line); err != nil {
		return "", err
	}
	return bc.readLine()
}

// pop3AuthOutcome classifies a backend's reply to AUTH other than +OK.
// Only "-ERR [AUTH]" (RFC 3206 §4) or an -ERR without a code is a definite
// failure; [SYS/TEMP], [SYS/PERM], any other code and anything that is not
// -ERR are not. [IN-USE] and [LOGIN-DELAY] carry the line for the client.
func pop3AuthOutcome(line string) *LoginError {
	detail := fmt.Sprintf("backend replied %.160q", line)
	text, ok := strings.CutPrefix(line, "-ERR")
	if !ok {
		return unavailable(detail, nil)
	}
	code := responseCode(text)
	switch {
	case code == "" || code == "AUTH":
		return rejected(detail)
	case pop3PassedCodes[code]:
		le := unavailable("backend refused the login: "+detail, nil)
		le.ClientLine = lineio.Printable(line, lineio.POP3MaxResponseLine-len("\r\n"))
		return le
	}
	return unavailable(detail, nil)
}
