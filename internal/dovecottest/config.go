//go:build unix

package dovecottest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// identity says which users Dovecot's processes and its mail run as.
type identity struct {
	root bool
	// internalUser, internalGroup and loginUser become
	// default_internal_user, default_internal_group and
	// default_login_user.
	internalUser, internalGroup, loginUser string
	// mailUID and mailGID own the users' homes and mail.
	mailUID, mailGID int
}

// currentIdentity picks the users for the current process. As root, the
// Debian package's "dovecot" and "dovenull" run the internal and login
// processes, and mail belongs to "nobody": Dovecot refuses mail access as
// uid 0. Otherwise everything runs as the current user.
func currentIdentity() (identity, error) {
	if os.Geteuid() == 0 {
		id := identity{root: true, internalUser: "dovecot", loginUser: "dovenull"}
		u, err := user.Lookup("dovecot")
		if err != nil {
			return id, fmt.Errorf("user dovecot does not exist (the dovecot-core package creates it; install with: %s)", InstallHint)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			return id, fmt.Errorf("group of user dovecot: %v", err)
		}
		id.internalGroup = g.Name
		if _, err := user.Lookup("dovenull"); err != nil {
			id.loginUser = "nobody"
		}
		id.mailUID, id.mailGID = 65534, 65534
		if n, err := user.Lookup("nobody"); err == nil {
			id.mailUID, _ = strconv.Atoi(n.Uid)
			id.mailGID, _ = strconv.Atoi(n.Gid)
		}
		return id, nil
	}
	u, err := user.Current()
	if err != nil {
		return identity{}, fmt.Errorf("current user: %v", err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return identity{}, fmt.Errorf("group of the current user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return identity{internalUser: u.Username, internalGroup: g.Name, loginUser: u.Username,
		mailUID: uid, mailGID: gid}, nil
}

// chown gives path to the mail user; rootless it is already theirs.
func (id identity) chown(path string) error {
	if !id.root {
		return nil
	}
	return os.Lchown(path, id.mailUID, id.mailGID)
}

// makeDir creates the instance directory. It is not t.TempDir: the path must
// stay short (base_dir holds Unix sockets, whose paths are limited to about
// 100 bytes) and, as root, every directory above it must be searchable by the
// dovecot and mail users, which t.TempDir's 0700 parent is not.
func makeDir(id identity) (string, error) {
	base := os.TempDir()
	if len(base) > 40 || (id.root && !testenv.Searchable(base)) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "dovecottest-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return "", err
	}
	if id.root && !testenv.Searchable(dir) {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%s: a parent directory is not searchable by other users, which Dovecot's unprivileged processes need", dir)
	}
	return dir, nil
}

// validate checks opts for what passwd-file and the config cannot express.
func validate(opts *Options) error {
	bad := func(s string) bool { return s == "" || strings.ContainsAny(s, ":\r\n\x00") }
	seen := map[string]bool{}
	for _, u := range opts.Users {
		name := strings.ToLower(u.Name)
		if bad(name) || strings.ContainsAny(name, "/% \t") || name == "." || name == ".." {
			return fmt.Errorf("user name %q: must be non-empty without ':', '/', '%%', spaces or line breaks", u.Name)
		}
		if bad(u.Password) {
			return fmt.Errorf("user %q: password must be non-empty without ':' or line breaks", u.Name)
		}
		if seen[name] {
			return fmt.Errorf("user %q listed twice", u.Name)
		}
		seen[name] = true
	}
	if opts.MasterUser != "" || opts.MasterPassword != "" {
		if bad(opts.MasterUser) || strings.ContainsAny(opts.MasterUser, " \t") || bad(opts.MasterPassword) {
			return fmt.Errorf("master user %q: name and password must be non-empty without ':' or line breaks", opts.MasterUser)
		}
	}
	if opts.SubmissionRelay != "" {
		if _, port, err := net.SplitHostPort(opts.SubmissionRelay); err != nil || port == "" {
			return fmt.Errorf("SubmissionRelay %q: want host:port", opts.SubmissionRelay)
		}
	}
	for _, r := range opts.UsernameFormat {
		if !strings.ContainsRune(usernameFormatChars, r) {
			return fmt.Errorf("UsernameFormat %q: only letters, digits and %q may appear", opts.UsernameFormat, "%.@_-")
		}
	}
	for _, n := range opts.LoginTrustedNetworks {
		if _, _, err := net.ParseCIDR(n); err != nil && net.ParseIP(n) == nil {
			return fmt.Errorf("LoginTrustedNetworks: %q is neither a CIDR nor an IP", n)
		}
	}
	return nil
}

// usernameFormatChars are the characters Options.UsernameFormat may have:
// enough for Dovecot's variables and modifiers, nothing that could end
// the setting's line or quote it.
const usernameFormatChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%.@_-"

// home is a user's home directory.
func (s *Server) home(name string) string { return filepath.Join(s.Dir, "home", name) }

// writeFiles writes the passdb files, the homes with empty Maildirs and, with
// TLS, the certificate.
func (s *Server) writeFiles() error {
	// passwd-file lines are user:password:uid:gid:gecos:home:shell:extra.
	var passdb, userdb, masters bytes.Buffer
	for _, u := range s.opts.Users {
		name := strings.ToLower(u.Name)
		s.users[name] = true
		fmt.Fprintf(&passdb, "%s:{PLAIN}%s\n", name, u.Password)
		fmt.Fprintf(&userdb, "%s::%d:%d::%s::\n", name, s.id.mailUID, s.id.mailGID, s.home(name))
	}
	if s.opts.MasterUser != "" {
		fmt.Fprintf(&masters, "%s:{PLAIN}%s\n", s.opts.MasterUser, s.opts.MasterPassword)
	}
	// The auth process runs as the internal user: the files must be
	// readable by it. They only hold throwaway test passwords.
	for name, data := range map[string][]byte{"passdb": passdb.Bytes(), "userdb": userdb.Bytes(), "masters": masters.Bytes()} {
		if err := os.WriteFile(filepath.Join(s.Dir, name), data, 0o644); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(s.Dir, "home"), 0o711); err != nil {
		return err
	}
	for name := range s.users {
		h := s.home(name)
		for _, d := range []string{h, filepath.Join(h, "Maildir"), filepath.Join(h, "Maildir", "cur"),
			filepath.Join(h, "Maildir", "new"), filepath.Join(h, "Maildir", "tmp")} {
			if err := os.Mkdir(d, 0o700); err != nil {
				return err
			}
			if err := s.id.chown(d); err != nil {
				return err
			}
		}
	}
	if s.opts.TLS {
		pool, err := writeSelfSigned(filepath.Join(s.Dir, "cert.pem"), filepath.Join(s.Dir, "key.pem"))
		if err != nil {
			return err
		}
		s.tlsPool = pool
	}
	return nil
}

// pickPorts chooses a free loopback port for every listener. Dovecot may
// lose a race for one of them; Start then retries with new ports.
func (s *Server) pickPorts() error {
	targets := []*string{&s.IMAPAddr, &s.POP3Addr}
	if s.opts.SubmissionRelay != "" {
		targets = append(targets, &s.SubmissionAddr)
	}
	if s.opts.TLS {
		targets = append(targets, &s.IMAPSAddr, &s.POP3SAddr)
		if s.opts.SubmissionRelay != "" {
			targets = append(targets, &s.SubmissionsAddr)
		}
	}
	if s.opts.HAProxy {
		targets = append(targets, &s.IMAPHAProxyAddr, &s.POP3HAProxyAddr)
		if s.opts.SubmissionRelay != "" {
			targets = append(targets, &s.SubmissionHAProxyAddr)
		}
	}
	ports, err := testenv.FreePorts(len(targets))
	if err != nil {
		return err
	}
	for i, addr := range targets {
		*addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i]))
	}
	return nil
}

// port returns the port of a "127.0.0.1:port" address, or 0 when empty.
func port(addr string) string {
	if addr == "" {
		return "0"
	}
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// loginService is one protocol's login service in dovecot.conf: its
// plaintext (or STARTTLS) listener Name, the implicit-TLS one Name+"s",
// and with Options.HAProxy Name+"_haproxy", on these ports.
type loginService struct {
	Name, Port, TLSPort, HAProxyPort string
}

// config renders dovecot.conf.
func (s *Server) config() (string, error) {
	relayHost, relayPort := "", ""
	if s.opts.SubmissionRelay != "" {
		relayHost, relayPort, _ = net.SplitHostPort(s.opts.SubmissionRelay)
	}
	maxConns := s.opts.MaxUserConnections
	data := map[string]any{
		"Dir":          s.Dir,
		"Instance":     filepath.Base(s.Dir),
		"InternalUser": s.id.internalUser,
		"InternalGrp":  s.id.internalGroup,
		"LoginUser":    s.id.loginUser,
		"MailUID":      s.id.mailUID,
		"MailGID":      s.id.mailGID,
		"Opts":         s.opts,
		"Protocols":    "imap pop3",
		"Trusted":      strings.Join(s.opts.LoginTrustedNetworks, " "),
		"RelayHost":    relayHost,
		"RelayPort":    relayPort,
		"MaxConns":     maxConns,
		"ProcessLimit": maxConns + 100,
		"LoginClients": 2*maxConns + 100,
	}
	logins := []loginService{
		{"imap", port(s.IMAPAddr), port(s.IMAPSAddr), port(s.IMAPHAProxyAddr)},
		{"pop3", port(s.POP3Addr), port(s.POP3SAddr), port(s.POP3HAProxyAddr)},
	}
	if relayHost != "" {
		logins = append(logins, loginService{"submission", port(s.SubmissionAddr), port(s.SubmissionsAddr), port(s.SubmissionHAProxyAddr)})
	}
	data["Logins"] = logins
	data["IMAPClientLimit"] = s.opts.IMAPClientLimit
	// Every mail process keeps a connection to the log, anvil and stats
	// services, whose client_limit is default_client_limit (1000).
	data["DefaultClientLimit"] = max(1000, 2*maxConns+100)
	if relayHost != "" {
		data["Protocols"] = "imap pop3 submission"
	}
	var b strings.Builder
	if err := configTemplate.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// configTemplate is the whole Dovecot 2.3 configuration; nothing from
// /etc/dovecot is included.
var configTemplate = template.Must(template.New("dovecot.conf").Parse(`# Private test instance written by kanmon's internal/dovecottest.
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
instance_name = {{.Instance}}
log_path = {{.Dir}}/dovecot.log
log_timestamp = "%H:%M:%S "
listen = 127.0.0.1
protocols = {{.Protocols}}
hostname = localhost

default_internal_user = {{.InternalUser}}
default_internal_group = {{.InternalGrp}}
default_login_user = {{.LoginUser}}
first_valid_uid = {{.MailUID}}
last_valid_uid = 0
first_valid_gid = {{.MailGID}}
last_valid_gid = 0

default_client_limit = {{.DefaultClientLimit}}
mail_location = maildir:~/Maildir
# IDLE falls back to polling when inotify instances run out (many
# Dovecots on one machine as one uid); poll often so tests stay prompt.
mailbox_idle_check_interval = 1 secs
mail_max_userip_connections = {{.MaxConns}}

# kanmon terminates client TLS; plaintext logins on loopback are the point.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = {{.Opts.UsernameFormat}}
auth_verbose = yes
auth_cache_size = 0
# Failed logins answer at once: kanmon's tests make many on purpose.
auth_failure_delay = 0
{{with .Trusted}}login_trusted_networks = {{.}}
{{end}}
{{- if .Opts.HAProxy}}haproxy_trusted_networks = 127.0.0.0/8
{{end}}
{{- if .Opts.TLS}}
ssl = yes
ssl_cert = <{{.Dir}}/cert.pem
ssl_key = <{{.Dir}}/key.pem
ssl_min_protocol = TLSv1.2
{{- else}}
ssl = no
{{- end}}
{{if .Opts.MasterUser}}
# SASL PLAIN with authzid=user, authcid=master logs in as user; pass = yes
# still requires the user to exist in the next passdb.
passdb {
  driver = passwd-file
  args = {{.Dir}}/masters
  master = yes
  pass = yes
}
{{end}}
# Dovecot 2.3 answers a failed login only at its auth process's next 0.5 s
# failure tick, even with auth_failure_delay = 0, unless the failed request
# carries "nodelay". This passdb authenticates nobody; it only adds that field
# and hands on to the real passdb. (A wrong master password is still delayed.)
passdb {
  driver = static
  args = noauthenticate nodelay
  result_success = continue
}
passdb {
  driver = passwd-file
  args = {{.Dir}}/passdb
}
userdb {
  driver = passwd-file
  args = {{.Dir}}/userdb
}
{{if .RelayHost}}
submission_relay_host = {{.RelayHost}}
submission_relay_port = {{.RelayPort}}
submission_relay_ssl = no
submission_relay_trusted = no
{{end}}
# The login services, in high-performance mode: a long-lived login process
# serves many connections, so benchmarks do not fork one per connection.
{{- range .Logins}}
service {{.Name}}-login {
  chroot =
  service_count = 0
  process_min_avail = 1
  client_limit = {{$.LoginClients}}
  inet_listener {{.Name}} {
    address = 127.0.0.1
    port = {{.Port}}
  }
  inet_listener {{.Name}}s {
    address = 127.0.0.1
    port = {{.TLSPort}}
    ssl = yes
  }
{{- if $.Opts.HAProxy}}
  inet_listener {{.Name}}_haproxy {
    address = 127.0.0.1
    port = {{.HAProxyPort}}
    haproxy = yes
  }
{{- end}}
}
{{- end}}
# One mail process per logged-in session.
service imap {
  process_limit = {{.ProcessLimit}}
{{- if gt .IMAPClientLimit 1}}
  client_limit = {{.IMAPClientLimit}}
  service_count = 0
{{- end}}
}
service pop3 {
  process_limit = {{.ProcessLimit}}
}
{{- if .RelayHost}}
service submission {
  process_limit = {{.ProcessLimit}}
}
{{- end}}
service anvil {
  chroot =
  # Without this socket the auth process applies no per-IP penalty, which
  # would otherwise delay logins from 127.0.0.1 by up to 15 s.
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`))
