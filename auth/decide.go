package auth

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Kind is what kanmon does with a login attempt.
type Kind int

const (
	// Refuse replies with FailureText; the backend is not contacted.
	Refuse Kind = iota
	// Passcode logs in at the backend as Decision.User with the master
	// credential (SASL PLAIN, authzid = User).
	Passcode
	// Passthrough logs in at the backend with the client's own user and
	// secret; the backend decides.
	Passthrough
)

// String returns "refuse", "passcode" or "passthrough".
func (k Kind) String() string {
	switch k {
	case Refuse:
		return "refuse"
	case Passcode:
		return "passcode"
	case Passthrough:
		return "passthrough"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// FailureText is the one message a client gets for every failed login,
// whatever the cause.
const FailureText = "Authentication failed. Accounts with two-factor authentication sign in with an app passcode; accounts without it only from the campus network."

// Attempt is one login attempt as the pre-auth front saw it.
type Attempt struct {
	// User is the user name the client sent.
	User string
	// Secret is the password or passcode the client sent.
	Secret string
	// ClientIP is the client's address (after PROXY protocol, if any).
	ClientIP netip.Addr
	// Protocol is imap, pop3 or submission: a passcode whose scope
	// (AppPasscode.Protocols) leaves it out is refused. Empty skips the
	// scope check.
	Protocol string
}

// Decision is what to do with an Attempt, and why.
type Decision struct {
	// Kind is the action.
	Kind Kind
	// User is the account name for the backend: the accounts-file
	// spelling for 2FA accounts, else as given.
	User string
	// App is the passcode's app name when Kind == Passcode, and when a
	// passcode matched outside its scope (Reason == ReasonOutOfScope).
	App string
	// Reason is the internal cause, for logs. It never contains the
	// secret and is never sent to the client.
	Reason Reason

	// hash identifies the matched passcode, so Stands can tell a revoked
	// and re-created passcode of the same app name from the original.
	hash string
	// protocol is Attempt.Protocol, so Stands can check a changed scope.
	protocol string
}

// PasscodeID is the ID (AppPasscode.ID) of the passcode that admitted the
// attempt, or "" when no passcode did.
func (d Decision) PasscodeID() string {
	if d.Kind != Passcode {
		return ""
	}
	return passcodeID(d.hash)
}

// Policy decides login attempts from one snapshot of the accounts file and
// the network settings. It is immutable after NewPolicy and safe for
// concurrent use; a reload builds a new Policy.
type Policy struct {
	accounts map[string]*policyAccount // by foldKey(user)
	pepper   Pepper
	trusted  []netip.Prefix
	require  bool
	dummy    passcodeHash // verified against when there is nothing real to check
}

type policyAccount struct {
	user      string
	passcodes []policyPasscode
	// authenticatorIDs keep the authenticators' last use from pruning.
	authenticatorIDs []string
}

type policyPasscode struct {
	app       string
	hash      string
	h         passcodeHash
	ok        bool     // hash decoded
	protocols []string // scope; empty = all
}

// NewPolicy builds a Policy. accounts may be nil (no account has 2FA).
// Accounts and trusted are copied; later changes to them have no effect.
// IPv4-mapped IPv6 prefixes in trusted are treated as IPv4 prefixes.
func NewPolicy(accounts *Accounts, pepper Pepper, trusted []netip.Prefix, require2FAOutside bool) *Policy {
	p := &Policy{
		accounts: map[string]*policyAccount{},
		pepper:   append(Pepper(nil), pepper...),
		require:  require2FAOutside,
		dummy:    passcodeHash{salt: make([]byte, saltLen), mac: make([]byte, 32)},
	}
	for _, pr := range trusted {
		if a := pr.Addr(); a.Is4In6() && pr.Bits() >= 96 {
			pr = netip.PrefixFrom(a.Unmap(), pr.Bits()-96)
		}
		p.trusted = append(p.trusted, pr.Masked())
	}
	if accounts != nil {
		for _, acct := range accounts.Accounts {
			key := foldKey(acct.User)
			if _, dup := p.accounts[key]; dup {
				continue // LoadAccounts refuses duplicates; first wins otherwise
			}
			pa := &policyAccount{user: acct.User}
			for _, au := range acct.AllAuthenticators() {
				pa.authenticatorIDs = append(pa.authenticatorIDs, au.ID())
			}
			for _, pc := range acct.Passcodes {
				h, err := parseHash(pc.Hash)
				pa.passcodes = append(pa.passcodes, policyPasscode{app: pc.App, hash: pc.Hash, h: h, ok: err == nil,
					protocols: slices.Clone(pc.Protocols)})
			}
			p.accounts[key] = pa
		}
	}
	return p
}

// Trusted reports whether ip is inside trusted_networks. IPv4-mapped IPv6
// addresses (::ffff:1.2.3.4) match IPv4 prefixes; zones are ignored.
func (p *Policy) Trusted(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, pr := range p.trusted {
		if pr.Contains(ip) {
			return true
		}
	}
	return false
}

// TwoFA reports whether user (case-insensitive) has 2FA on.
func (p *Policy) TwoFA(user string) bool {
	_, ok := p.accounts[foldKey(user)]
	return ok
}

// Decide applies the rules:
//
//   - empty user or secret: Refuse;
//   - user has 2FA: the secret must be a passcode matching one of the
//     account's passcodes (all are checked, to keep timing flat), and the
//     passcode's scope must include a.Protocol: Passcode; otherwise Refuse;
//   - user without 2FA, client in trusted_networks: Passthrough;
//   - user without 2FA outside: Refuse if require_2fa_outside, else
//     Passthrough.
//
// Unknown users and non-passcode secrets cost one dummy HMAC, so every
// path costs about the same.
func (p *Policy) Decide(a Attempt) Decision {
	if a.User == "" {
		return Decision{Kind: Refuse, User: a.User, Reason: ReasonEmptyUser}
	}
	if a.Secret == "" {
		return Decision{Kind: Refuse, User: a.User, Reason: ReasonEmptySecret}
	}
	norm, isPasscode := NormalizePasscode(a.Secret)
	acct := p.accounts[foldKey(a.User)]
	if acct == nil || !isPasscode || len(acct.passcodes) == 0 {
		p.dummy.verify(p.pepper, norm)
	}
	if acct == nil {
		return p.noTwoFA(a)
	}
	d := Decision{Kind: Refuse, User: acct.user}
	switch {
	case !isPasscode:
		d.Reason = ReasonNotPasscode
		return d
	case len(acct.passcodes) == 0:
		d.Reason = ReasonNoPasscodes
		return d
	}
	match := -1
	for i, pc := range acct.passcodes {
		h := pc.h
		if !pc.ok {
			h = p.dummy
		}
		if h.verify(p.pepper, norm) && pc.ok && match < 0 {
			match = i
		}
	}
	if match < 0 || len(p.pepper) == 0 {
		d.Reason = ReasonNoMatch
		return d
	}
	pc := acct.passcodes[match]
	if !inScope(pc.protocols, a.Protocol) {
		d.App, d.Reason = pc.app, ReasonOutOfScope
		return d
	}
	return Decision{Kind: Passcode, User: acct.user, App: pc.app, Reason: ReasonPasscode, hash: pc.hash, protocol: a.Protocol}
}

// noTwoFA decides for an account without 2FA.
func (p *Policy) noTwoFA(a Attempt) Decision {
	switch {
	case p.Trusted(a.ClientIP):
		return Decision{Kind: Passthrough, User: a.User, Reason: ReasonTrusted}
	case p.require:
		return Decision{Kind: Refuse, User: a.User, Reason: ReasonOutside}
	}
	return Decision{Kind: Passthrough, User: a.User, Reason: ReasonOutsideAllowed}
}

// Stands reports whether a session admitted by d (under an earlier Policy)
// from clientIP would still be admitted under p, without the secret: for
// Passcode, the account still has 2FA and the very same passcode (a revoked
// passcode re-created under the same app name does not stand), whose scope
// still includes the session's protocol; for
// Passthrough, the account still has no 2FA and the network rule still
// admits it. A reload uses it to close sessions whose credential is gone.
func (p *Policy) Stands(d Decision, clientIP netip.Addr) bool {
	acct := p.accounts[foldKey(d.User)]
	switch d.Kind {
	case Passcode:
		if acct == nil {
			return false
		}
		for _, pc := range acct.passcodes {
			if pc.hash == d.hash && strings.EqualFold(pc.app, d.App) {
				return inScope(pc.protocols, d.protocol)
			}
		}
		return false
	case Passthrough:
		if acct != nil {
			return false
		}
		return p.Trusted(clientIP) || !p.require
	}
	return false
}

// TwoFAChanges lists the accounts whose 2FA state differs between p and
// next (turned on, or reset with `2fa disable`), as spelled in whichever
// policy has them.
func (p *Policy) TwoFAChanges(next *Policy) []string {
	var changed []string
	for k, a := range p.accounts {
		if _, ok := next.accounts[k]; !ok {
			changed = append(changed, a.user)
		}
	}
	for k, a := range next.accounts {
		if _, ok := p.accounts[k]; !ok {
			changed = append(changed, a.user)
		}
	}
	slices.Sort(changed)
	return changed
}

// PasscodeIDs returns the ID (AppPasscode.ID) of every passcode in the
// policy, and of every authenticator (Authenticator.ID): the last-use
// records to keep.
func (p *Policy) PasscodeIDs() map[string]bool {
	ids := map[string]bool{}
	for _, a := range p.accounts {
		for _, pc := range a.passcodes {
			ids[passcodeID(pc.hash)] = true
		}
		for _, id := range a.authenticatorIDs {
			ids[id] = true
		}
	}
	return ids
}
