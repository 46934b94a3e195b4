package proxy

import (
	"encoding/base64"
	"errors"

	"github.com/emersion/go-sasl"
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
