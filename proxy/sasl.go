package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/kanmon-mail/kanmon/auth"
)

// SASL pieces shared by the IMAP, POP3 and SMTP fronts. go-sasl parses
// PLAIN; LOGIN is two prompts and needs no library.

// SASL LOGIN prompts (draft-murchison-sasl-login), base64 of "Username:"
// and "Password:".
const (
	saslLoginUserPrompt = "VXNlcm5hbWU6"
	saslLoginPassPrompt = "UGFzc3dvcmQ6"
)

// errSASLCancelled is a client's "*" (RFC 4954 §4, RFC 9051 §6.2.2).
var errSASLCancelled = errors.New("sasl: exchange cancelled")

// errSASLBase64 is a response that is not valid base64.
var errSASLBase64 = errors.New("sasl: invalid base64")

// errSASLMalformed is a PLAIN response without its two NULs.
var errSASLMalformed = errors.New("sasl: malformed PLAIN response")

// errSASLAuthzid is a PLAIN response asking to act as another user, which
// clients may not do through kanmon.
var errSASLAuthzid = errors.New("sasl: authzid differs from authcid")

// decodeSASLResponse decodes one client response line: "*" cancels, "="
// is an empty initial response (RFC 4959 §3, RFC 4954 §4).
func decodeSASLResponse(line string, initial bool) ([]byte, error) {
	switch {
	case line == "*":
		return nil, errSASLCancelled
	case initial && line == "=":
		return []byte{}, nil
	}
	data, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, errSASLBase64
	}
	return data, nil
}

// plainCredentials parses a PLAIN response (RFC 4616). An authzid other
// than the authcid is refused with errSASLAuthzid.
func plainCredentials(resp []byte) (user, secret string, err error) {
	var authzid string
	srv := sasl.NewPlainServer(func(identity, username, password string) error {
		authzid, user, secret = identity, username, password
		return nil
	})
	if _, _, err := srv.Next(resp); err != nil {
		return "", "", errSASLMalformed
	}
	if authzid != "" && authzid != user {
		return user, "", errSASLAuthzid
	}
	return user, secret, nil
}

// errSASLMechanism is a mechanism other than PLAIN and LOGIN.
var errSASLMechanism = errors.New("sasl: unsupported mechanism")

// saslCredentials runs a PLAIN (RFC 4616) or LOGIN exchange, the two
// mechanisms every front offers, and returns the credentials. initial is
// the client's initial response, if it sent one. ask sends a challenge
// in the protocol's form ("+ " in IMAP and POP3, "334 " in SMTP) and
// returns the client's response line; its errors are returned as they
// are. The other errors are the errSASL* values: a cancel, bad base64, a
// malformed response, an authzid other than the authcid, an unsupported
// mechanism.
func saslCredentials(mech string, initial *string, ask func(challenge string) (string, error)) (user, secret string, err error) {
	respond := func(challenge string) ([]byte, error) {
		if initial != nil {
			line := *initial
			initial = nil
			return decodeSASLResponse(line, true)
		}
		line, err := ask(challenge)
		if err != nil {
			return nil, err
		}
		return decodeSASLResponse(line, false)
	}
	switch strings.ToUpper(mech) {
	case "PLAIN":
		resp, err := respond("")
		if err != nil {
			return "", "", err
		}
		return plainCredentials(resp)
	case "LOGIN":
		u, err := respond(saslLoginUserPrompt)
		if err != nil {
			return "", "", err
		}
		p, err := respond(saslLoginPassPrompt)
		if err != nil {
			return "", "", err
		}
		// NUL is allowed in neither (as in PLAIN, RFC 4616 §2): passed
		// through, it would shift the fields of the backend's PLAIN login.
		if bytes.IndexByte(u, 0) >= 0 || bytes.IndexByte(p, 0) >= 0 {
			return "", "", errSASLMalformed
		}
		return string(u), string(p), nil
	}
	return "", "", errSASLMechanism
}

// saslRefusal is the dialect's reply to a SASL exchange that ended in err
// without credentials: an authzid for another user is a failed login
// (logged, with the uniform reply), the other errSASL* values have their
// own replies. ok is false when err is not the exchange's own (an I/O
// error, a line too long), for the front to end on.
func (s *session) saslRefusal(err error, user string) (line string, ok bool) {
	d := s.dialect
	switch {
	case errors.Is(err, errSASLAuthzid):
		s.log.Info("login failed", "user", user, "reason", auth.ReasonAuthzid.String())
		return d.failed, true
	case errors.Is(err, errSASLMechanism):
		return d.saslMechanism, true
	case errors.Is(err, errSASLCancelled):
		return d.saslCancelled, true
	case errors.Is(err, errSASLBase64):
		return d.saslBase64, true
	case errors.Is(err, errSASLMalformed):
		return d.saslMalformed, true
	}
	return "", false
}
