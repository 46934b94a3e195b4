package config

import "github.com/kanmon-mail/kanmon/username"

// Users is the [users] section: how the user names clients type fold to
// one account, in the spirit of Dovecot's auth_default_realm and
// auth_username_format. Every part of kanmon (2FA, lockout, last use,
// sessions, portal, CLI, logs) and the backend login use the canonical
// name. Characters that backends drop or give a meaning (spaces, control
// characters, "%", "*", quotes, backslashes, Unicode not in NFC) are
// refused in every name.
type Users struct {
	// Domains are the local mail domains, e.g. ["example.edu"]: a name
	// in any of them ("alice@example.edu") is the same account as the
	// bare name ("alice"). A name in another domain is refused like a
	// wrong password, without asking the backend, unless other_domains
	// lists it. With no domains, names are taken as typed, except that
	// "alice@anything" is refused when alice has 2FA. Default: none.
	Domains []string `toml:"domains"`
	// Format is the canonical form: "local" strips the domain ("alice",
	// for Dovecot with auth_username_format = %Ln, Zimbra), "address"
	// keeps the first of domains ("alice@example.edu", for an Active
	// Directory UPN or a Dovecot keyed on the full address). The backend
	// is logged into this name. Default local.
	Format string `toml:"format"`
	// OtherDomains are further domains whose names are accepted as full
	// addresses, each its own account ("bob@partner.example"). Default:
	// none.
	OtherDomains []string `toml:"other_domains"`

	// Names is the policy the keys above make.
	Names *username.Policy `toml:"-"`
}

// finishUsers applies [users]'s default and builds its policy.
func (c *Config) finishUsers() error {
	u := &c.Users
	if u.Format == "" {
		u.Format = username.FormatLocal
	}
	p, err := username.New(u.Domains, u.Format, u.OtherDomains)
	if err != nil {
		key := "users.domains"
		if len(u.Domains) == 0 && u.Format != username.FormatLocal {
			key = "users.format"
		}
		return c.errorf(key, "[users]: %v", err)
	}
	u.Names = p
	return nil
}
