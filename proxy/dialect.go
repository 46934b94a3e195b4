package proxy

import (
	"context"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
)

// A dialect is one protocol's reply table: every line that kanmon itself
// says to a client of that protocol outside a front's own command
// grammar. The fronts, the cap refusals and the session registry's
// goodbyes all read from it, so only text written here (and each
// front's command replies) ever reaches a client; internal causes go to
// the log. Lines are without CRLF, except tooManyConns and the BYEs,
// which are written as they are.
type dialect struct {
	// serve runs the protocol's pre-auth front on a new session.
	serve func(ctx context.Context, s *session)

	// failed is the one reply to every failed login (auth.FailureText).
	failed string
	// unavailable is the reply to a login that could not be decided
	// (lockout state or backend unavailable): try again later.
	unavailable string
	// privacyRequired refuses credentials before TLS.
	privacyRequired string
	// sessionLimit refuses a login with right credentials when
	// max_sessions_per_user_ip is reached (texts follow Dovecot's for
	// mail_max_userip_connections).
	sessionLimit string
	// tooManyConns replaces the greeting when a connection cap is hit
	// (max_connections, max_preauth_per_ip), CRLF included.
	tooManyConns string

	// shuttingDown, idle and tooManyErrors end a pre-auth session: at
	// shutdown, after the pre-auth timeout, after maxPreAuthFailures.
	// An empty tooManyErrors closes without a word.
	shuttingDown, idle, tooManyErrors string
	// lineTooLong answers a command line over the protocol's limit
	// before the connection closes.
	lineTooLong string

	// revokedBye and shutdownBye are written into a logged-in session,
	// CRLF included, when a reload revokes its credential or the server
	// shuts down; only where gated (IMAP), since only there can kanmon
	// tell when the stream stands between two responses.
	revokedBye, shutdownBye string
	gated                   bool

	// The SASL exchange's refusals: an unsupported mechanism, a
	// client's "*", bad base64, a malformed PLAIN response.
	saslMechanism, saslCancelled, saslBase64, saslMalformed string
}

// dialectOf is protocol's reply table; nil for a protocol not served.
//
// The codes: IMAP per RFC 9051 §7.1 and RFC 5530 (AUTHENTICATIONFAILED,
// UNAVAILABLE, PRIVACYREQUIRED, LIMIT; BYE per §7.1.5); POP3 per RFC
// 2449 §8 and RFC 3206 ([AUTH], [SYS/TEMP], [IN-USE]; no [AUTH] on the
// privacy refusal, which says nothing of the credentials); SMTP per RFC
// 5321 §4.2, RFC 4954 §6 and RFC 3463 (535 5.7.8, 454 4.7.0, 538 5.7.11,
// 421 to close; 4.7.0 for the connection caps, as Postfix says).
func dialectOf(protocol string) *dialect {
	switch protocol {
	case config.ProtocolIMAP:
		return &dialect{
			serve:           serveIMAP,
			failed:          "NO [AUTHENTICATIONFAILED] " + auth.FailureText,
			unavailable:     "NO [UNAVAILABLE] Login is temporarily unavailable. Please try again later.",
			privacyRequired: "NO [PRIVACYREQUIRED] Use STARTTLS before logging in.",
			sessionLimit:    "NO [LIMIT] Maximum number of connections from user+IP exceeded",
			tooManyConns:    "* BYE [UNAVAILABLE] Too many connections; please try again later.\r\n",
			shuttingDown:    "* BYE Server shutting down.",
			idle:            "* BYE Autologout; idle for too long.",
			tooManyErrors:   "* BYE Too many invalid commands.",
			revokedBye:      "* BYE Your credential was revoked. Please sign in again.\r\n",
			shutdownBye:     "* BYE Server shutting down.\r\n",
			gated:           true,
			saslMechanism:   "NO Unsupported authentication mechanism.",
			saslCancelled:   "BAD AUTHENTICATE cancelled.",
			saslBase64:      "BAD Invalid base64 in AUTHENTICATE response.",
			saslMalformed:   "BAD Malformed AUTHENTICATE response.",
		}
	case config.ProtocolPOP3:
		return &dialect{
			serve:           servePOP3,
			failed:          "-ERR [AUTH] " + auth.FailureText,
			unavailable:     "-ERR [SYS/TEMP] Login is temporarily unavailable. Please try again later.",
			privacyRequired: "-ERR Use STLS before logging in.",
			sessionLimit:    "-ERR [IN-USE] Maximum number of connections from user+IP exceeded",
			tooManyConns:    "-ERR [SYS/TEMP] Too many connections; please try again later.\r\n",
			shuttingDown:    "-ERR Server shutting down.",
			idle:            "-ERR Disconnected for inactivity.",
			lineTooLong:     "-ERR Line too long.",
			saslMechanism:   "-ERR Unsupported authentication mechanism.",
			saslCancelled:   "-ERR AUTH cancelled.",
			saslBase64:      "-ERR Invalid base64 in AUTH response.",
			saslMalformed:   "-ERR Malformed AUTH response.",
		}
	case config.ProtocolSubmission:
		return &dialect{
			serve:           serveSubmission,
			failed:          "535 5.7.8 " + auth.FailureText,
			unavailable:     "454 4.7.0 Temporary authentication failure",
			privacyRequired: "538 5.7.11 Encryption required for requested authentication mechanism",
			sessionLimit:    "454 4.7.0 Maximum number of connections from user+IP exceeded",
			tooManyConns:    "421 4.7.0 Too many connections; please try again later\r\n",
			shuttingDown:    "421 4.3.2 Server shutting down",
			idle:            "421 4.4.2 Idle for too long; closing connection",
			tooManyErrors:   "421 4.7.0 Too many errors; closing connection",
			lineTooLong:     "500 5.5.2 Line too long",
			saslMechanism:   "504 5.5.4 Unrecognized authentication type",
			saslCancelled:   "501 5.0.0 Authentication cancelled",
			saslBase64:      "501 5.5.2 Cannot decode response",
			saslMalformed:   "501 5.5.2 Malformed authentication response",
		}
	}
	return nil
}
