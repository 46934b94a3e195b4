package backend

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/kanmon-mail/kanmon/config"
)

// Tags kanmon uses on the backend connection. Any value works since the
// client never sees them.
const (
	imapTagStartTLS   = "k0"
	imapTagAuth       = "k1"
	imapTagCapability = "k2"
	imapTagID         = "k3"
	imapTagLogout     = "k4"
)

// loginIMAP authenticates with SASL PLAIN (RFC 4616; SASL-IR per RFC
// 4959 when the greeting offers it) and learns the post-login
// capabilities.
func (b *Backend) loginIMAP(ctx context.Context, bc *conn, cred Credentials) (*Login, error) {
	greeting, err := bc.readLine()
	if err != nil {
		return nil, unavailable("reading backend greeting", err)
	}
	if !strings.HasPrefix(greeting, "* OK") {
		return nil, unavailable(fmt.Sprintf("backend greeting is not OK: %.80q", greeting), nil)
	}
	caps := responseCapability(strings.TrimPrefix(greeting, "* OK"))

	if b.TLSMode == config.TLSStartTLS {
		if err := bc.writeLine(imapTagStartTLS + " STARTTLS"); err != nil {
			return nil, unavailable("sending STARTTLS to backend", err)
		}
		if _, status, err := readIMAPTagged(bc, imapTagStartTLS, nil); err != nil {
			return nil, tlsFailed("backend STARTTLS", err)
		} else if status != "OK" {
			return nil, tlsFailed("backend refused STARTTLS: "+status, nil)
		}
		if err := b.startTLS(ctx, bc); err != nil {
			return nil, err
		}
		caps = "" // capabilities before TLS no longer hold
	}
	var id string // the ID command that forwards the client, if any
	if b.forwardMode() == config.ForwardID {
		id = imapForwardID(imapTagID, cred.Client)
	}

	ir := base64.StdEncoding.EncodeToString([]byte(cred.Authzid + "\x00" + cred.Authcid + "\x00" + cred.Password))
	if hasCapability(caps, "SASL-IR") {
		// ID and the login go in one write (pipelined, RFC 9051 §5.5):
		// one round trip, as a direct login makes.
		auth := imapTagAuth + " AUTHENTICATE PLAIN " + ir
		if id != "" {
			auth = id + "\r\n" + auth
		}
		if err = bc.writeLine(auth); err == nil && id != "" {
			if err := imapIDReply(bc); err != nil {
				return nil, err
			}
		}
	} else {
		if id != "" {
			if err := bc.writeLine(id); err != nil {
				return nil, unavailable("sending ID to backend", err)
			}
			if err := imapIDReply(bc); err != nil {
				return nil, err
			}
		}
		err = bc.writeLine(imapTagAuth + " AUTHENTICATE PLAIN")
		if err == nil {
			var line string
			line, err = bc.readLine()
			if err == nil && !strings.HasPrefix(line, "+") {
				return nil, imapAuthOutcome(line, imapTagAuth)
			}
			if err == nil {
				err = bc.writeLine(ir)
			}
		}
	}
	if err != nil {
		return nil, unavailable("sending AUTHENTICATE to backend", err)
	}
	var untaggedCaps string
	tagged, status, err := readIMAPTagged(bc, imapTagAuth, func(untagged string) {
		if c, ok := strings.CutPrefix(untagged, "* CAPABILITY "); ok {
			untaggedCaps = c
		}
	})
	if err != nil {
		return nil, unavailable("reading backend AUTHENTICATE reply", err)
	}
	if status != "OK" {
		return nil, imapAuthOutcome(tagged, imapTagAuth)
	}
	caps = responseCapability(strings.TrimPrefix(tagged, imapTagAuth+" OK"))
	if caps == "" {
		caps = untaggedCaps
	}
	if caps == "" {
		if caps, err = askIMAPCapability(bc); err != nil {
			return nil, err
		}
	}
	return &Login{Capability: caps}, nil
}

// imapIDReply reads the backend's answer to the ID that tells it who the
// client is (see imapForwardID), sent before the login. A server that
// trusts kanmon (Dovecot's login_trusted_networks) then logs and limits by
// the real address; one that does not ignores the fields. Anything but OK
// fails the login: forwarding was asked for.
func imapIDReply(bc *conn) error {
	tagged, status, err := readIMAPTagged(bc, imapTagID, nil)
	if err != nil {
		return unavailable("backend ID", err)
	}
	if status != "OK" {
		return unavailable(fmt.Sprintf("backend refused ID (forward_client_ip = \"id\"): %.120q", tagged), nil)
	}
	return nil
}

// askIMAPCapability sends CAPABILITY and returns the untagged answer.
func askIMAPCapability(bc *conn) (string, error) {
	if err := bc.writeLine(imapTagCapability + " CAPABILITY"); err != nil {
		return "", unavailable("sending CAPABILITY to backend", err)
	}
	var caps string
	_, status, err := readIMAPTagged(bc, imapTagCapability, func(untagged string) {
		if c, ok := strings.CutPrefix(untagged, "* CAPABILITY "); ok {
			caps = c
		}
	})
	if err != nil || status != "OK" || caps == "" {
		return "", unavailable("backend CAPABILITY after login failed", err)
	}
	return caps, nil
}

// readIMAPTagged reads lines until the one tagged tag, handing untagged
// lines to onUntagged. It returns that line and its status (OK, NO, BAD).
// A "* BYE" or a continuation request ends the exchange as an error.
func readIMAPTagged(bc *conn, tag string, onUntagged func(string)) (string, string, error) {
	for {
		line, err := bc.readLine()
		if err != nil {
			return "", "", err
		}
		if strings.HasPrefix(line, "* BYE") {
			return "", "", fmt.Errorf("backend said %.120q", line)
		}
		if strings.HasPrefix(line, "+") {
			// Nothing kanmon sends here asks for one (RFC 4959 §3: not
			// after an initial response); waiting would only time out.
			return "", "", fmt.Errorf("backend sent an unexpected continuation %.80q", line)
		}
		rest, ok := strings.CutPrefix(line, tag+" ")
		if !ok {
			if onUntagged != nil {
				onUntagged(line)
			}
			continue
		}
		status, _, _ := strings.Cut(rest, " ")
		return line, strings.ToUpper(status), nil
	}
}

// imapAuthOutcome classifies a backend's non-OK reply to AUTHENTICATE.
// Only a NO that speaks of credentials (RFC 5530 AUTHENTICATIONFAILED or
// AUTHORIZATIONFAILED, or a NO without a code) is a definite failure.
func imapAuthOutcome(line, tag string) *LoginError {
	rest := strings.TrimPrefix(line, tag+" ")
	status, text, _ := strings.Cut(rest, " ")
	detail := fmt.Sprintf("backend replied %.160q", line)
	if !strings.EqualFold(status, "NO") {
		return unavailable(detail, nil)
	}
	code := responseCode(text)
	switch code {
	case "", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED":
		return rejected(detail)
	}
	return unavailable(detail, nil)
}

// responseCode returns the atom of a leading "[CODE ...]" (RFC 9051 §7.1).
func responseCode(text string) string {
	text = strings.TrimSpace(text)
	if !strings.HasPrefix(text, "[") {
		return ""
	}
	end := strings.IndexByte(text, ']')
	if end < 0 {
		return ""
	}
	code, _, _ := strings.Cut(text[1:end], " ")
	return strings.ToUpper(code)
}

// responseCapability returns the list inside a leading "[CAPABILITY ...]".
func responseCapability(text string) string {
	text = strings.TrimSpace(text)
	rest, ok := strings.CutPrefix(text, "[CAPABILITY ")
	if !ok {
		return ""
	}
	list, _, ok := strings.Cut(rest, "]")
	if !ok {
		return ""
	}
	return list
}

// hasCapability reports whether the space-separated list holds name.
func hasCapability(list, name string) bool {
	for _, c := range strings.Fields(list) {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}
