package kanmontest

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/selfsigned"
)

// Options describe the kanmon to configure (WriteFiles, NewFiles) or to
// start (Start).
type Options struct {
	// IMAPBackend is the backend's host:port.
	IMAPBackend string
	// MasterUser and MasterPassword are the backend master credentials.
	MasterUser, MasterPassword string
	// MasterPasswordFile, when set, is a file name in the config
	// directory: the master password is written there (with a newline),
	// and every [backend.X] names it with master_password_file instead of
	// giving master_password.
	MasterPasswordFile string
	// TrustedNetworks defaults to 127.0.0.1/32 when nil; use an empty,
	// non-nil slice for "nothing is trusted".
	TrustedNetworks []string
	// AllowOutside sets require_2fa_outside = false.
	AllowOutside bool
	// Passcodes lists, per 2FA user, the apps to make passcodes for.
	// Users listed with no apps still get 2FA.
	Passcodes map[string][]string
	// LogLevel is log_level; empty leaves kanmon's default (info), but
	// Start logs at debug whatever it says.
	LogLevel string
	// Extra is appended to the top level of the config (before tables),
	// e.g. "max_connections = 5\n".
	Extra string
	// MetricsAddress adds metrics_address on a free loopback port
	// (Files.MetricsAddr).
	MetricsAddress bool
	// Listeners are the TLS modes (config.TLSImplicit, TLSStartTLS,
	// TLSNone) of the listeners each protocol with a backend gets, one
	// listener a mode, on free loopback ports. Nil means all three.
	Listeners []string
	// ListenerExtra is appended inside every [[listener]], e.g.
	// "proxy_protocol = true".
	ListenerExtra string
	// BackendTLS is [backend.imap] tls: none (the default), starttls or
	// implicit.
	BackendTLS string
	// BackendExtra is appended inside [backend.imap], e.g.
	// `timeout = "300ms"`.
	BackendExtra string
	// POP3Backend and SubmissionBackend, when set, add that protocol's
	// listeners and a [backend.X] with the same master credentials.
	POP3Backend, SubmissionBackend string
	// POP3BackendExtra is appended inside [backend.pop3], e.g.
	// `forward_client_ip = "xclient"`.
	POP3BackendExtra string
	// SubmissionBackendExtra is appended inside [backend.submission],
	// e.g. `forward_client_ip = "xclient"`.
	SubmissionBackendExtra string
	// Portal, when set, adds a [portal] on a free loopback port
	// (Files.PortalAddr). Start does not run the portal; `kanmon serve`
	// does.
	Portal *Portal
	// Lockout is the body of the [lockout] section. Empty means
	// DefaultLockout: real counters with a 1 ms tarpit, so tests stay
	// fast. ServerLockout is kanmon's own defaults.
	Lockout string
	// Users, when set, is the body of a [users] table, e.g.
	// `domains = ["example.edu"]`.
	Users string
	// NoLockout makes Start run without the lockout guard. The config
	// still has its [lockout].
	NoLockout bool
}

// Portal is the [portal] section of Options.
type Portal struct {
	// Issuer is the issuer; empty leaves kanmon's default.
	Issuer string
	// MailHost is mail_host; empty leaves kanmon's default.
	MailHost string
}

// DefaultLockout is the [lockout] body tests get unless they set their
// own: the real thresholds, but a tarpit too short to slow a test down.
const DefaultLockout = "tarpit = \"1ms\"\ntarpit_max = \"1ms\"\n"

// ServerLockout is a [lockout] body that leaves every key at kanmon's
// default, the tarpit too: for measuring kanmon as it ships.
const ServerLockout = "# kanmon's defaults\n"

// Files is a kanmon config directory written from Options: kanmon.toml,
// a self-signed certificate for localhost and 127.0.0.1 (cert.pem,
// key.pem), and, once a passcode is added, accounts.toml and state/.
// Paths in the config are relative to Dir, as an admin writes them.
type Files struct {
	// Dir holds the config, accounts, state and certificate.
	Dir string
	// ConfigPath is the config file, Dir/kanmon.toml.
	ConfigPath string
	// CertFile is the certificate (PEM), for a client's CA file.
	CertFile string
	// CertPEM is the certificate's text.
	CertPEM []byte
	// ClientTLS trusts kanmon's certificate.
	ClientTLS *tls.Config
	// IMAPS, IMAPStartTLS and IMAPPlain are the IMAP listener addresses
	// (implicit TLS, STARTTLS, and plaintext-for-loopback); each is set
	// when Options.Listeners has its mode.
	IMAPS, IMAPStartTLS, IMAPPlain string
	// POP3S, POP3StartTLS and POP3Plain are set likewise when
	// Options.POP3Backend is.
	POP3S, POP3StartTLS, POP3Plain string
	// SubmissionS, SubmissionStartTLS and SubmissionPlain are set likewise
	// when Options.SubmissionBackend is.
	SubmissionS, SubmissionStartTLS, SubmissionPlain string
	// PortalAddr is the portal's address, with Options.Portal.
	PortalAddr string
	// MetricsAddr is metrics_address, with Options.MetricsAddress.
	MetricsAddr string

	opts      Options
	passcodes map[string]string
}

// WriteFiles writes the config directory for opts into a temp dir, with
// opts.Passcodes added; it fails the test on an error.
func WriteFiles(t testing.TB, opts Options) *Files {
	t.Helper()
	f, err := NewFiles(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// NewFiles writes the config directory for opts into dir, an existing
// directory, with opts.Passcodes added to the accounts file. It takes no
// testing.TB, for tools such as kanmon-bench.
func NewFiles(dir string, opts Options) (*Files, error) {
	cert, err := selfsigned.New("localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	certPath, _, err := cert.WriteFiles(dir, "cert.pem", "key.pem")
	if err != nil {
		return nil, err
	}
	f := &Files{
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "kanmon.toml"),
		CertFile:   certPath,
		CertPEM:    cert.CertPEM,
		ClientTLS:  &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1"},
		opts:       opts,
		passcodes:  map[string]string{},
	}
	if opts.MasterPasswordFile != "" {
		if err := os.WriteFile(filepath.Join(dir, opts.MasterPasswordFile), []byte(opts.MasterPassword+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	if err := f.writeConfig(); err != nil {
		return nil, err
	}
	for user, apps := range opts.Passcodes {
		if _, err := auth.EnableTwoFA(f.store(), user); err != nil {
			return nil, err
		}
		for _, app := range apps {
			if f.passcodes[user+"/"+app], err = auth.AddPasscode(f.store(), f.stateDir(), user, app); err != nil {
				return nil, err
			}
		}
	}
	return f, nil
}

// writeConfig renders kanmon.toml on free loopback ports, new ones each
// call, and writes it.
func (f *Files) writeConfig() error {
	opts := f.opts
	ports := &portReservation{}
	defer ports.release()
	trusted := opts.TrustedNetworks
	if trusted == nil {
		trusted = []string{"127.0.0.1/32"}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = \"state\"\naccounts  = \"accounts.toml\"\ntrusted_networks = %s\nrequire_2fa_outside = %t\n",
		tomlStrings(trusted), !opts.AllowOutside)
	if opts.LogLevel != "" {
		fmt.Fprintf(&b, "log_level = %q\n", opts.LogLevel)
	}
	f.MetricsAddr = ""
	if opts.MetricsAddress {
		f.MetricsAddr = ports.next()
		fmt.Fprintf(&b, "metrics_address = %q\n", f.MetricsAddr)
	}
	endTable(&b, opts.Extra)
	b.WriteString("[tls]\ncert = \"cert.pem\"\nkey  = \"key.pem\"\n\n")
	lockout := opts.Lockout
	if lockout == "" {
		lockout = DefaultLockout
	}
	b.WriteString("[lockout]\n")
	endTable(&b, lockout)
	if opts.Users != "" {
		b.WriteString("[users]\n")
		endTable(&b, opts.Users)
	}
	f.PortalAddr = ""
	if p := opts.Portal; p != nil {
		f.PortalAddr = ports.next()
		fmt.Fprintf(&b, "[portal]\naddress = %q\n", f.PortalAddr)
		if p.Issuer != "" {
			fmt.Fprintf(&b, "issuer = %q\n", p.Issuer)
		}
		if p.MailHost != "" {
			fmt.Fprintf(&b, "mail_host = %q\n", p.MailHost)
		}
		endTable(&b, "")
	}
	modes := opts.Listeners
	if modes == nil {
		modes = []string{config.TLSImplicit, config.TLSStartTLS, config.TLSNone}
	}
	for _, p := range []struct {
		name, backend, tls, extra string
		addrs                     map[string]*string
	}{
		{config.ProtocolIMAP, opts.IMAPBackend, opts.BackendTLS, opts.BackendExtra, f.addrs(&f.IMAPS, &f.IMAPStartTLS, &f.IMAPPlain)},
		{config.ProtocolPOP3, opts.POP3Backend, "", opts.POP3BackendExtra, f.addrs(&f.POP3S, &f.POP3StartTLS, &f.POP3Plain)},
		{config.ProtocolSubmission, opts.SubmissionBackend, "", opts.SubmissionBackendExtra, f.addrs(&f.SubmissionS, &f.SubmissionStartTLS, &f.SubmissionPlain)},
	} {
		for _, a := range p.addrs {
			*a = ""
		}
		if p.backend == "" {
			continue
		}
		for _, mode := range modes {
			addr := p.addrs[mode]
			if addr == nil {
				return fmt.Errorf("kanmontest: listener tls %q: want implicit, starttls or none", mode)
			}
			*addr = ports.next()
			fmt.Fprintf(&b, "[[listener]]\nprotocol = %q\naddress  = %q\ntls      = %q\n", p.name, *addr, mode)
			endTable(&b, opts.ListenerExtra)
		}
		backendTLS := p.tls
		if backendTLS == "" {
			backendTLS = config.TLSNone
		}
		fmt.Fprintf(&b, "[backend.%s]\naddress = %q\ntls = %q\nmaster_user = %q\n", p.name, p.backend, backendTLS, opts.MasterUser)
		if opts.MasterPasswordFile != "" {
			fmt.Fprintf(&b, "master_password_file = %q\n", opts.MasterPasswordFile)
		} else {
			fmt.Fprintf(&b, "master_password = %q\n", opts.MasterPassword)
		}
		endTable(&b, p.extra)
	}
	if ports.err != nil {
		return ports.err
	}
	return os.WriteFile(f.ConfigPath, []byte(b.String()), 0o600)
}

// endTable ends a table (or the top level) with extra, the caller's own
// keys, and a blank line.
func endTable(b *strings.Builder, extra string) {
	if extra = strings.TrimRight(extra, "\n"); extra != "" {
		b.WriteString(extra + "\n")
	}
	b.WriteString("\n")
}

// addrs maps the three listener TLS modes to the fields for their
// addresses.
func (f *Files) addrs(implicit, starttls, plain *string) map[string]*string {
	return map[string]*string{config.TLSImplicit: implicit, config.TLSStartTLS: starttls, config.TLSNone: plain}
}

// tomlStrings renders ss as a TOML array of strings.
func tomlStrings(ss []string) string {
	quoted := make([]string, len(ss))
	for i, s := range ss {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

// Passcode returns the passcode made for user's app from
// Options.Passcodes.
func (f *Files) Passcode(user, app string) string {
	return f.passcodes[user+"/"+app]
}

// EnableTwoFA turns 2FA on for user in the accounts file (as the CLI
// does). A running kanmon sees it at its next reload.
func (f *Files) EnableTwoFA(t testing.TB, user string) {
	t.Helper()
	if _, err := auth.EnableTwoFA(f.store(), user); err != nil {
		t.Fatal(err)
	}
}

// AddPasscode adds a passcode for user's app (turning 2FA on) and returns
// it. A running kanmon sees it at its next reload.
func (f *Files) AddPasscode(t testing.TB, user, app string) string {
	t.Helper()
	return f.AddScopedPasscode(t, user, app)
}

// AddScopedPasscode adds a passcode for user's app valid only on protocols
// (all of them when none are given), turning 2FA on, and returns it. A
// running kanmon sees it at its next reload.
func (f *Files) AddScopedPasscode(t testing.TB, user, app string, protocols ...string) string {
	t.Helper()
	f.EnableTwoFA(t, user)
	pc, err := auth.AddScopedPasscode(f.store(), f.stateDir(), user, app, protocols)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// RevokePasscode deletes user's passcode for app, as `kanmon passcode
// revoke` does. A running kanmon sees it at its next reload.
func (f *Files) RevokePasscode(t testing.TB, user, app string) {
	t.Helper()
	if _, _, err := auth.RevokePasscode(f.store(), user, app); err != nil {
		t.Fatal(err)
	}
}

// DisableTwoFA is the admin reset `kanmon 2fa disable`: 2FA off, all of
// user's passcodes gone. A running kanmon sees it at its next reload.
func (f *Files) DisableTwoFA(t testing.TB, user string) {
	t.Helper()
	if _, _, err := auth.DisableTwoFA(f.store(), user); err != nil {
		t.Fatal(err)
	}
}

func (f *Files) store() *auth.Store { return auth.OpenStore(filepath.Join(f.Dir, "accounts.toml")) }

func (f *Files) stateDir() string { return filepath.Join(f.Dir, "state") }

// portReservation hands out distinct free loopback ports: each stays bound
// until release, so the kernel cannot hand the same one out twice. The
// first error is kept in err; next then returns "".
type portReservation struct {
	lns []net.Listener
	err error
}

func (r *portReservation) next() string {
	if r.err != nil {
		return ""
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.err = err
		return ""
	}
	r.lns = append(r.lns, ln)
	return ln.Addr().String()
}

func (r *portReservation) release() {
	for _, ln := range r.lns {
		ln.Close()
	}
}
