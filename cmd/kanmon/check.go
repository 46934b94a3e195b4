package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/redisstate"
	"github.com/kanmon-mail/kanmon/username"
)

// runCheck implements "kanmon check": it validates the config and the
// accounts file without touching the pepper, the TOTP key or the network;
// it warns when either key file is missing while the accounts need it.
func runCheck(args []string, stdout, stderr io.Writer) int {
	return adminCommand("check", "", 0, 0, args, stderr, func(cfg *config.Config, _ string, _ []string) error {
		var accts *auth.Accounts
		var err error
		if cfg.AccountsURL != "" {
			// the database: its accounts, under their canonical names
			if accts, err = accountsStore(cfg).Read(); err != nil {
				return err
			}
		} else {
			if accts, err = auth.LoadAccounts(cfg.Accounts); err != nil {
				return err
			}
			if _, err := accts.UnderNames(cfg.Users.Names, cfg.Accounts); err != nil {
				return err
			}
		}
		warnUserNames(cfg, accts, stderr)
		warnBackendClientIP(cfg, stderr)
		warnRedis(cfg, stderr)
		warnCertificate(cfg, stderr)
		n := accts.NumPasscodes()
		if _, err := os.Stat(auth.PepperPath(cfg.StateDir)); n > 0 && errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "warning: %s is missing: the %d existing passcodes cannot match until it is restored\n",
				auth.PepperPath(cfg.StateDir), n)
		}
		enrolled := 0
		for i := range accts.Accounts {
			if accts.Accounts[i].HasTOTP() {
				enrolled++
			}
		}
		if _, err := os.Stat(auth.TOTPKeyPath(cfg.StateDir)); enrolled > 0 && errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "warning: %s is missing: the %d registered authenticators cannot be checked until it is restored\n",
				auth.TOTPKeyPath(cfg.StateDir), enrolled)
		}
		fmt.Fprintf(stdout, "ok: %d listeners, %d 2FA accounts, %d passcodes\n", len(cfg.Listeners), len(accts.Accounts), n)
		return nil
	})
}

// warnUserNames warns when [users] lists no domains while names without
// a domain are in use: a backend that strips a domain (Dovecot %Ln,
// Zimbra, AD) then takes "alice@anything" for alice. kanmon refuses that
// spelling for 2FA accounts, but only domains make it one account.
func warnUserNames(cfg *config.Config, accts *auth.Accounts, stderr io.Writer) {
	if cfg.Users.Names.HasDomains() {
		return
	}
	bare := 0
	for _, a := range accts.Accounts {
		if _, hasDomain := username.Local(a.User); !hasDomain {
			bare++
		}
	}
	if bare == 0 && cfg.Portal == nil {
		return
	}
	fmt.Fprintf(stderr, "warning: [users] domains is empty, and %d 2FA accounts (and any portal user) are named without a domain: "+
		"if the backend also accepts \"name@domain\", list the mail domains in [users] domains so that every spelling is one account\n", bare)
}

// warnBackendClientIP warns about each backend that gets passthrough
// logins (trusted_networks is set, or require_2fa_outside is off) but not
// the client's address (forward_client_ip = "none"). Such a backend sees
// every password from the campus as coming from kanmon, so a penalty it
// keeps per address, as Dovecot's auth penalty does, slows every user's
// login through kanmon after a handful of wrong passwords.
func warnBackendClientIP(cfg *config.Config, stderr io.Writer) {
	passthrough := len(cfg.TrustedPrefixes) > 0 || (cfg.Require2FAOutside != nil && !*cfg.Require2FAOutside)
	if !passthrough {
		return
	}
	for _, proto := range []string{config.ProtocolIMAP, config.ProtocolPOP3, config.ProtocolSubmission} {
		b := cfg.Backend.For(proto)
		if b == nil || b.ForwardClientIP != config.ForwardNone {
			continue
		}
		fmt.Fprintf(stderr, "warning: [backend.%s] forward_client_ip = %q: the backend sees every passthrough login as coming from kanmon, "+
			"so its per-address penalty (Dovecot's auth penalty) slows all users after a spray; "+
			"set forward_client_ip and the backend's trusted networks (README, \"Setting up the backend\")\n", proto, b.ForwardClientIP)
	}
}

// warnRedis asks the Redis of [redis], if any, whether it answers and
// whether it may evict kanmon's keys (maxmemory-policy).
func warnRedis(cfg *config.Config, stderr io.Writer) {
	if cfg.Redis == nil {
		return
	}
	c, err := redisstate.Open(cfg.Redis, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "warning: [redis]: %v\n", err)
		return
	}
	defer c.Close()
	if !c.Up() {
		fmt.Fprintf(stderr, "warning: [redis] does not answer now: kanmon serve would start with on_failure = %q in force\n", cfg.Redis.OnFailure)
		return
	}
	if w := c.EvictionWarning(context.Background()); w != "" {
		fmt.Fprintln(stderr, "warning:", w)
	}
}

// warnCertificate loads the [tls] certificate and key, if any, and warns
// when serve could not: a missing or unreadable file, a key that does not
// match, or a certificate that has expired or expires within 14 days.
func warnCertificate(cfg *config.Config, stderr io.Writer) {
	if cfg.TLS.Cert == "" {
		return
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		fmt.Fprintf(stderr, "warning: [tls]: %v: kanmon serve will not start until it loads\n", err)
		return
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		fmt.Fprintf(stderr, "warning: [tls] cert %s: %v\n", cfg.TLS.Cert, err)
		return
	}
	switch left := time.Until(leaf.NotAfter); {
	case left <= 0:
		fmt.Fprintf(stderr, "warning: [tls] cert %s expired on %s\n", cfg.TLS.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	case left < 14*24*time.Hour:
		fmt.Fprintf(stderr, "warning: [tls] cert %s expires on %s, in less than 14 days\n", cfg.TLS.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}
