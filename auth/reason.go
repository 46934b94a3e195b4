package auth

import "strconv"

// Reason is why a login attempt ended as it did. It carries the text the
// log line says, the label of the kanmon_logins_total metric, and whether
// the attempt counts toward lockout; code branches on the value, never on
// the text. A client never sees it: every failure gets FailureText.
type Reason uint8

// The reasons of a login, whether the policy, the lockout guard, the
// backend or a front decided it.
const (
	// ReasonNone is the zero value: no reason recorded.
	ReasonNone Reason = iota
	// ReasonEmptyUser: the client sent an empty user name.
	ReasonEmptyUser
	// ReasonEmptySecret: the client sent an empty password.
	ReasonEmptySecret
	// ReasonNotPasscode: a 2FA account presented something that is not a
	// passcode (its account password, most likely).
	ReasonNotPasscode
	// ReasonNoMatch: a passcode-shaped secret matched none of the
	// account's passcodes.
	ReasonNoMatch
	// ReasonNoPasscodes: a 2FA account without any passcode.
	ReasonNoPasscodes
	// ReasonPasscode: an app passcode matched (success).
	ReasonPasscode
	// ReasonOutOfScope: a passcode matched, but its scope leaves out
	// this protocol.
	ReasonOutOfScope
	// ReasonTrusted: an account without 2FA, inside trusted_networks
	// (passthrough).
	ReasonTrusted
	// ReasonOutside: an account without 2FA, outside trusted_networks,
	// with require_2fa_outside on (refused).
	ReasonOutside
	// ReasonOutsideAllowed: an account without 2FA, outside
	// trusted_networks, with require_2fa_outside off (passthrough).
	ReasonOutsideAllowed
	// ReasonBackendRejected: the backend refused a passthrough password.
	ReasonBackendRejected
	// ReasonStale: a wrong secret the lockout guard remembers, refused
	// without asking the backend and not counted again.
	ReasonStale
	// ReasonLockedAccountIP: the account is locked from this address.
	ReasonLockedAccountIP
	// ReasonLockedAccount: the account is locked from new addresses.
	ReasonLockedAccount
	// ReasonLockedIP: the client address is locked.
	ReasonLockedIP
	// ReasonLockedPrefix: the client's network prefix is locked.
	ReasonLockedPrefix
	// ReasonLockoutUnavailable: the lockout state cannot be trusted, so
	// logins are refused as temporarily unavailable.
	ReasonLockoutUnavailable
	// ReasonBackendUnavailable: the backend could not be reached or did
	// not answer clearly.
	ReasonBackendUnavailable
	// ReasonAuthzid: a SASL PLAIN response asked to act as another user,
	// which clients may not do through kanmon.
	ReasonAuthzid
	// ReasonUserName: the user name has a character kanmon refuses, is
	// malformed, or is in a domain [users] does not accept.
	ReasonUserName
	// ReasonUnknownDomain: "name@domain" kept its domain ([users] lists
	// none, or it is in other_domains) while name is a 2FA account: a
	// backend that strips domains would take it for name.
	ReasonUnknownDomain
	// ReasonCoalesced: the backend rejected the same password for the
	// same account in a concurrent attempt, whose answer this one shares
	// without asking again (counted once, there).
	ReasonCoalesced
)

// LastReason is the highest Reason, for tests that walk them all.
const LastReason = ReasonCoalesced

// reasonInfo is what a Reason carries.
type reasonInfo struct {
	text, label string
	counts      bool
}

// info is r's log text, metrics label and lockout weight. The texts of
// the lockout reasons are lockout.Verdict's own, which the fail2ban
// filter and the docs quote.
func (r Reason) info() reasonInfo {
	switch r {
	case ReasonEmptyUser:
		return reasonInfo{"empty user name", "empty_user", false}
	case ReasonEmptySecret:
		return reasonInfo{"empty secret", "empty_secret", false}
	case ReasonNotPasscode:
		return reasonInfo{"2FA account presented a non-passcode secret", "not_passcode", true}
	case ReasonNoMatch:
		return reasonInfo{"no passcode matched", "no_match", true}
	case ReasonNoPasscodes:
		return reasonInfo{"no passcode matched (2FA account has no passcodes)", "no_passcodes", true}
	case ReasonPasscode:
		return reasonInfo{"app passcode matched", "passcode", false}
	case ReasonOutOfScope:
		return reasonInfo{"app passcode matched, but its scope does not include this protocol", "out_of_scope", true}
	case ReasonTrusted:
		return reasonInfo{"account without 2FA inside trusted_networks", "passthrough_trusted", false}
	case ReasonOutside:
		return reasonInfo{"account without 2FA outside trusted_networks", "outside", false}
	case ReasonOutsideAllowed:
		return reasonInfo{"account without 2FA outside trusted_networks; require_2fa_outside is off", "passthrough_outside", false}
	case ReasonBackendRejected:
		return reasonInfo{"backend rejected the password", "backend_rejected", true}
	case ReasonStale:
		return reasonInfo{"repeated stale secret", "stale_secret", false}
	case ReasonLockedAccountIP:
		return reasonInfo{"locked: account+ip", "locked_account_ip", false}
	case ReasonLockedAccount:
		return reasonInfo{"locked: account", "locked_account", false}
	case ReasonLockedIP:
		return reasonInfo{"locked: ip", "locked_ip", false}
	case ReasonLockedPrefix:
		return reasonInfo{"locked: prefix", "locked_prefix", false}
	case ReasonLockoutUnavailable:
		return reasonInfo{"lockout unavailable", "lockout_unavailable", false}
	case ReasonBackendUnavailable:
		return reasonInfo{"backend unavailable", "backend_unavailable", false}
	case ReasonAuthzid:
		return reasonInfo{"PLAIN authzid differs from authcid", "authzid", false}
	case ReasonUserName:
		return reasonInfo{"user name refused", "user_name", false}
	case ReasonUnknownDomain:
		return reasonInfo{"user name keeps a domain, and the name before it has 2FA", "unknown_domain", false}
	case ReasonCoalesced:
		return reasonInfo{"backend rejected the password in a concurrent identical attempt", "coalesced", false}
	}
	return reasonInfo{"Reason(" + strconv.Itoa(int(r)) + ")", "other", false}
}

// String is the reason as the log says it.
func (r Reason) String() string { return r.info().text }

// Label is the reason's "reason" label on kanmon_logins_total: a fixed
// set of snake_case values, "other" for anything unknown.
func (r Reason) Label() string { return r.info().label }

// Counts reports whether a failure for this reason counts toward
// lockout: only a wrong secret that the policy or the backend was sure
// about. An outside-the-campus refusal says nothing about the password,
// an empty user or secret is a client bug, and a lock or a remembered
// stale secret has been counted already.
func (r Reason) Counts() bool { return r.info().counts }
