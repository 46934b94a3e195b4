package e2e

// User names and domains ([users]) against the real Dovecot: Dovecot runs
// with auth_username_format = %Ln, as a Zimbra-like backend that strips
// the domain, so "alice@anything" with alice's password is alice to it.
// kanmon must fold every local spelling to one account (2FA, lockout, last
// use, portal, the backend login) and keep every other spelling away from
// Dovecot. Each login is a fresh connection to kanmon's implicit-TLS
// listener of IMAP, POP3 or submission; failures print the transcript.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/otp"
)

const (
	// campusDomain is the local mail domain of the [users] tables below.
	campusDomain = "kyokyo-u.ac.jp"
	// campusUsers is the [users] body with campusDomain as the only
	// local domain (format local).
	campusUsers = `domains = ["` + campusDomain + `"]` + "\n"
)

// nameProto is one mail protocol of the table the tests run over: the
// reply every failed login gets and the start of a successful one.
type nameProto struct{ name, failed, ok string }

// nameProtos are the protocols, in the order the tests try them.
var nameProtos = []nameProto{
	{config.ProtocolIMAP, "a1 " + failedReply, "a1 OK "},
	{config.ProtocolPOP3, pop3Failed, "+OK "},
	{config.ProtocolSubmission, smtpFailed, "235 "},
}

// startNamesDovecot starts a Dovecot whose auth_username_format is format
// ("" for dovecottest's default), with IMAP, POP3 and submission (relaying
// to a sink nobody reads), the master user, and users; opts.Users are
// added as they are.
func startNamesDovecot(t *testing.T, format string, opts dovecottest.Options, users ...string) *dovecottest.Server {
	t.Helper()
	opts.UsernameFormat = format
	opts.SubmissionRelay = dovecottest.StartSink(t).Addr
	return startDovecot(t, opts, users...)
}

// startNamesKanmon starts a kanmon in front of dc with one implicit-TLS
// listener per protocol, 127.0.0.1/32 trusted, alice on 2FA with a
// "Thunderbird" passcode, users as the body of its [users] table ("" for
// no table) and lockout as its [lockout] body ("" for the tests' default).
func startNamesKanmon(t *testing.T, dc *dovecottest.Server, users, lockout string) *kanmontest.Kanmon {
	t.Helper()
	opts := kanmontest.Options{
		IMAPBackend: dc.IMAPAddr, POP3Backend: dc.POP3Addr, SubmissionBackend: dc.SubmissionAddr,
		MasterUser: masterUser, MasterPassword: masterPassword,
		Listeners:       []string{config.TLSImplicit},
		TrustedNetworks: []string{"127.0.0.1/32"},
		Passcodes:       map[string][]string{"alice": {"Thunderbird"}},
		Lockout:         lockout,
	}
	opts.Users = users
	return kanmontest.Start(t, opts)
}

// nameClient is a login client of one protocol on kanmon's implicit-TLS
// listener, connected from a chosen loopback address; it keeps the
// transcript as C:/S: lines.
type nameClient struct {
	lineConn
	proto string
	lines []string
}

// dialNames connects to k's listener for proto from ip and reads the
// greeting; for submission it also sends EHLO.
func dialNames(t *testing.T, k *kanmontest.Kanmon, proto, ip string) *nameClient {
	t.Helper()
	addr := map[string]string{config.ProtocolIMAP: k.IMAPS, config.ProtocolPOP3: k.POP3S, config.ProtocolSubmission: k.SubmissionS}[proto]
	c := &nameClient{lineConn: lineFrom(t, addr, ip, nil, k.ClientTLS), proto: proto}
	c.reply("")
	if proto == config.ProtocolSubmission {
		c.send("EHLO e2e.example.edu")
		c.reply("")
	}
	return c
}

// send writes line and records it.
func (c *nameClient) send(line string) {
	c.t.Helper()
	c.lines = append(c.lines, "C: "+line)
	c.writeLine(line)
}

// reply reads and records one reply and returns its last line: up to the
// line tagged tag for IMAP (any line when tag is ""), one line for POP3,
// up to the line without a continuation for SMTP.
func (c *nameClient) reply(tag string) string {
	c.t.Helper()
	for {
		l := c.line()
		c.lines = append(c.lines, "S: "+l)
		switch {
		case c.proto == config.ProtocolIMAP && (tag == "" || strings.HasPrefix(l, tag+" ")),
			c.proto == config.ProtocolPOP3,
			c.proto == config.ProtocolSubmission && (len(l) < 4 || l[3] != '-'):
			return l
		}
	}
}

// login logs in as user with secret (IMAP LOGIN, POP3 USER and PASS,
// SMTP AUTH PLAIN) and returns the last line of the reply.
func (c *nameClient) login(user, secret string) string {
	c.t.Helper()
	switch c.proto {
	case config.ProtocolIMAP:
		c.send(fmt.Sprintf("a1 LOGIN %q %q", user, secret))
		return c.reply("a1")
	case config.ProtocolPOP3:
		c.send("USER " + user)
		if r := c.reply(""); !strings.HasPrefix(r, "+OK") {
			return r
		}
		c.send("PASS " + secret)
	default:
		c.send("AUTH PLAIN " + plainResponse(user, secret))
	}
	return c.reply("")
}

// transcript is the conversation so far.
func (c *nameClient) transcript() string { return strings.Join(c.lines, "\n") }

// wantRefused logs in on a fresh connection and fails unless the reply is
// p's uniform failure reply.
func wantRefused(t *testing.T, k *kanmontest.Kanmon, p nameProto, ip, user, secret string) {
	t.Helper()
	c := dialNames(t, k, p.name, ip)
	defer c.conn.Close()
	if r := c.login(user, secret); r != p.failed {
		t.Errorf("%s from %s: want the uniform failure %q\n%s", user, ip, p.failed, c.transcript())
	}
}

// wantLoggedIn logs in on a fresh connection and fails the test unless the
// login succeeds.
func wantLoggedIn(t *testing.T, k *kanmontest.Kanmon, p nameProto, ip, user, secret string) {
	t.Helper()
	c := dialNames(t, k, p.name, ip)
	defer c.conn.Close()
	if r := c.login(user, secret); !strings.HasPrefix(r, p.ok) {
		t.Fatalf("%s from %s: want %q...\n%s", user, ip, p.ok, c.transcript())
	}
}

// dovecotMarker logs in as an unknown user, a new name each call, straight
// at Dovecot's IMAP listener, logs out, and waits until Dovecot has logged
// both its auth process's line and its login process's line for it. It
// returns the name.
func dovecotMarker(t *testing.T, dc *dovecottest.Server) string {
	t.Helper()
	name := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	c := dialLine(t, dc.IMAPAddr, nil)
	defer c.conn.Close()
	c.greeting("* OK ")
	c.writeLine("m1 LOGIN " + name + " not-a-password")
	for l := c.line(); !strings.HasPrefix(l, "m1 "); l = c.line() {
	}
	c.writeLine("m2 LOGOUT")
	_, _ = io.Copy(io.Discard, c.br)
	waitFor(t, 5*time.Second, "Dovecot to log the marker login "+name, func() bool {
		log := dc.Log()
		return strings.Contains(log, "passwd-file("+name+",") && strings.Contains(log, "user=<"+name+">")
	})
	return name
}

// dovecotLoginsDuring runs do between two marker logins (dovecotMarker) and
// returns the lines Dovecot logged in between about login attempts: its
// auth process's lines and its login processes' lines, except for
// connections that made none ("no auth attempts", such as kanmon's EHLO
// probe). Since each marker's lines are waited for, whatever do caused at
// Dovecot has been logged by the time the second marker has.
func dovecotLoginsDuring(t *testing.T, dc *dovecottest.Server, do func()) []string {
	t.Helper()
	before := dovecotMarker(t, dc)
	do()
	after := dovecotMarker(t, dc)
	lines := strings.Split(dc.Log(), "\n")
	start := 0
	for i, l := range lines {
		if strings.Contains(l, before) {
			start = i + 1
		}
	}
	var logins []string
	for _, l := range lines[start:] {
		attempt := strings.Contains(l, " auth: ") || strings.Contains(l, " auth-worker(") || strings.Contains(l, "-login: ")
		if attempt && !strings.Contains(l, after) && !strings.Contains(l, "no auth attempts") {
			logins = append(logins, l)
		}
	}
	return logins
}

// A local-domain spelling is alice: her account password is refused in
// two spellings, from the campus and from outside, the second time as the
// wrong secret she already tried (one account, one memory of it), and her
// passcode logs in as "ALICE@KYOKYO-U.AC.JP" with the log, the passcode's
// last use and the backend on "alice". (The successful login clears the
// memory, so each protocol starts afresh.)
func TestE2EUserNamesLocalDomainFolds(t *testing.T) {
	dc := startNamesDovecot(t, "%Ln", dovecottest.Options{}, "alice", "carol")
	k := startNamesKanmon(t, dc, campusUsers, "")
	passcode := k.Passcode("alice", "Thunderbird")
	for _, p := range nameProtos {
		t.Run(p.name, func(t *testing.T) {
			for _, c := range []struct {
				ip, user string
				reason   auth.Reason
			}{
				{"127.0.0.1", "alice@" + campusDomain, auth.ReasonNotPasscode},
				{"127.0.0.2", "Alice@Kyokyo-U.AC.JP", auth.ReasonStale},
			} {
				wantRefused(t, k, p, c.ip, c.user, alicePassword)
				if n := countLogLines(k.Logs(), `msg="login failed"`, "proto="+p.name+" ", "client="+c.ip+" ", "user=alice ",
					fmt.Sprintf("reason=%q", c.reason)); n != 1 {
					t.Errorf("%s from %s: %d failures logged with user=alice reason=%q, want 1", c.user, c.ip, n, c.reason)
				}
			}
			wantLoggedIn(t, k, p, "127.0.0.1", "ALICE@KYOKYO-U.AC.JP", passcode)
			if n := countLogLines(k.Logs(), "msg=login ", "proto="+p.name+" ", "user=alice ", "via=passcode"); n != 1 {
				t.Errorf("%d msg=login lines for %s with user=alice via=passcode, want 1", n, p.name)
			}
			uses, err := k.Server.LastUse()
			if err != nil {
				t.Fatal(err)
			}
			if len(uses) != 1 {
				t.Fatalf("last use: %+v, want one record (one passcode)", uses)
			}
			for _, u := range uses {
				if u.User != "alice" || u.Protocol != p.name || u.ClientIP != "127.0.0.1" || u.App != "Thunderbird" {
					t.Errorf("last use %+v, want alice's Thunderbird over %s from 127.0.0.1", u, p.name)
				}
			}
		})
	}
	if n := countLogLines(k.Logs(), "user=alice@"); n != 0 {
		t.Errorf("%d kanmon log lines name alice with her domain, want every one on the account name", n)
	}
}

// A name in a domain that is neither local nor in other_domains is refused
// with the uniform reply before any backend contact: Dovecot, which would
// take "alice@other.example" with her password for alice, logs no login
// attempt. A partner domain (other_domains) keeps its domain, so alice's
// name there is refused too (she has 2FA), while carol's passes through:
// the control that shows Dovecot's log does record a login kanmon makes.
func TestE2EUserNamesForeignDomainNeverReachesDovecot(t *testing.T) {
	dc := startNamesDovecot(t, "%Ln", dovecottest.Options{}, "alice", "carol")
	k := startNamesKanmon(t, dc, campusUsers+`other_domains = ["partner.example"]`+"\n", "")
	refused := []struct {
		user, secret string
		reason       auth.Reason
	}{
		{"alice@other.example", alicePassword, auth.ReasonUserName},
		{"ALICE@Other.Example", k.Passcode("alice", "Thunderbird"), auth.ReasonUserName},
		{"carol@other.example", carolPassword, auth.ReasonUserName},
		{"alice@partner.example", alicePassword, auth.ReasonUnknownDomain},
	}
	for _, p := range nameProtos {
		t.Run(p.name, func(t *testing.T) {
			clients := make([]*nameClient, len(refused))
			for i := range refused {
				clients[i] = dialNames(t, k, p.name, "127.0.0.1")
			}
			logins := dovecotLoginsDuring(t, dc, func() {
				for i, r := range refused {
					if got := clients[i].login(r.user, r.secret); got != p.failed {
						t.Errorf("%s: want the uniform failure %q\n%s", r.user, p.failed, clients[i].transcript())
					}
				}
			})
			if len(logins) != 0 {
				t.Errorf("Dovecot logged login attempts while kanmon refused foreign names:\n%s", strings.Join(logins, "\n"))
			}
		})
	}
	klog := k.Logs()
	for _, r := range refused {
		if n := kanmonFailures(klog, "127.0.0.1", r.user, r.reason.String()); n != len(nameProtos) {
			t.Errorf("%d failures of %s logged as %q, want %d", n, r.user, r.reason, len(nameProtos))
		}
	}
	// The control, after every refusal: the same log shows a login that
	// does reach Dovecot.
	for _, p := range nameProtos {
		logins := dovecotLoginsDuring(t, dc, func() {
			wantLoggedIn(t, k, p, "127.0.0.1", "carol@partner.example", carolPassword)
		})
		if want := p.name + "-login: Info: Login: user=<carol>"; countLogLines(strings.Join(logins, "\n"), want) != 1 {
			t.Errorf("%s: carol's passthrough is not in Dovecot's log as %q:\n%s", p.name, want, strings.Join(logins, "\n"))
		}
	}
}

// Failures under any spelling count on alice's one set of lockout
// counters: per protocol, from an IP of its own, "alice", "ALICE" and
// "alice@kyokyo-u.ac.jp" with wrong passcodes make the account+ip counts
// 1, 2, 3 and lock (threshold 3), and a fourth wrong passcode under a
// fourth spelling is refused there as locked. The account count runs on
// across the protocols. Her right passcode, in yet another spelling, still
// logs in: a lock refuses wrong secrets only.
func TestE2EUserNamesOneLockoutCounter(t *testing.T) {
	dc := startNamesDovecot(t, "%Ln", dovecottest.Options{}, "alice")
	k := startNamesKanmon(t, dc, campusUsers, kanmontest.DefaultLockout+
		"account_ip_threshold = 3\naccount_ip_window = \"720h\"\naccount_window = \"720h\"\n")
	spellings := []string{"alice", "ALICE", "alice@" + campusDomain}
	for i, p := range nameProtos {
		t.Run(p.name, func(t *testing.T) {
			ip := fmt.Sprintf("127.0.0.%d", 2+i)
			for j, user := range spellings {
				wantRefused(t, k, p, ip, user, wrongPasscode(10*i+j))
				want := []string{`msg="login failed"`, "client=" + ip + " ", "user=alice ", "lockout.counted=true",
					fmt.Sprintf("lockout.account_ip=%d ", j+1), fmt.Sprintf("lockout.account=%d ", len(spellings)*i+j+1)}
				if j == len(spellings)-1 {
					want = append(want, "lockout.locked=account+ip")
				}
				if countLogLines(k.Logs(), want...) != 1 {
					t.Errorf("failure %d (%s) is not logged with %q:\n%s", j+1, user, want, k.Logs())
				}
			}
			wantRefused(t, k, p, ip, "Alice@Kyokyo-U.Ac.Jp", wrongPasscode(10*i+9))
			if n := kanmonFailures(k.Logs(), ip, "alice", auth.ReasonLockedAccountIP.String()); n != 1 {
				t.Errorf("a wrong passcode from %s after the lock: %d failures logged as %q, want 1", ip, n, auth.ReasonLockedAccountIP)
			}
			locked := false
			for _, l := range k.Guard.List() {
				locked = locked || l.Scope.String() == "account+ip" && l.User == "alice" && l.IP.String() == ip
			}
			if !locked {
				t.Errorf("locks %v lack account+ip on alice at %s", k.Guard.List(), ip)
			}
			wantLoggedIn(t, k, p, ip, "aLiCe@"+campusDomain, k.Passcode("alice", "Thunderbird"))
		})
	}
}

// Without [users] domains, names are taken as typed, except that a name
// with a domain before which stands a 2FA account is refused without
// asking Dovecot (which would take it for alice): with her password and
// with her passcode. carol, without 2FA, passes through as typed, and
// Dovecot logs her in.
func TestE2EUserNamesWithoutDomains(t *testing.T) {
	dc := startNamesDovecot(t, "%Ln", dovecottest.Options{}, "alice", "carol")
	k := startNamesKanmon(t, dc, "", "")
	user := "alice@" + campusDomain
	for _, p := range nameProtos {
		t.Run(p.name, func(t *testing.T) {
			logins := dovecotLoginsDuring(t, dc, func() {
				wantRefused(t, k, p, "127.0.0.1", user, alicePassword)
				wantRefused(t, k, p, "127.0.0.1", user, k.Passcode("alice", "Thunderbird"))
			})
			if len(logins) != 0 {
				t.Errorf("Dovecot logged login attempts for %s:\n%s", user, strings.Join(logins, "\n"))
			}
		})
	}
	if n := kanmonFailures(k.Logs(), "127.0.0.1", user, auth.ReasonUnknownDomain.String()); n != 2*len(nameProtos) {
		t.Errorf("%d failures of %s logged as %q, want %d", n, user, auth.ReasonUnknownDomain, 2*len(nameProtos))
	}
	for _, p := range nameProtos {
		wantLoggedIn(t, k, p, "127.0.0.1", "carol@"+campusDomain, carolPassword)
		if n := countLogLines(k.Logs(), "msg=login ", "proto="+p.name+" ", "user=carol@"+campusDomain+" ", "via=passthrough"); n != 1 {
			t.Errorf("%s: %d msg=login lines for carol@%s via=passthrough, want 1", p.name, n, campusDomain)
		}
		want := p.name + "-login: Info: Login: user=<carol>"
		waitFor(t, 5*time.Second, "Dovecot to log "+want, func() bool { return strings.Contains(dc.Log(), want) })
	}
}

// The backend is logged into the canonical name, by the master user (a
// passcode) and by passthrough alike. With Dovecot's default %Lu, which
// keeps domains, a login in another spelling only works if kanmon sends
// the name Dovecot knows: "alice" for format local, the full address for
// format address (whose accounts file still says "alice").
func TestE2EUserNamesBackendGetsCanonicalName(t *testing.T) {
	for _, tc := range []struct {
		format, users                 string
		dovecotUsers                  []string
		typedAlice, typedCarol, alice string
	}{
		{"local", campusUsers, []string{"alice", "carol"}, "ALICE@KYOKYO-U.AC.JP", "Carol@Kyokyo-U.ac.jp", "alice"},
		{"address", campusUsers + "format = \"address\"\n", []string{"alice@" + campusDomain, "carol@" + campusDomain}, "Alice", "CAROL", "alice@" + campusDomain},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var opts dovecottest.Options
			for _, u := range tc.dovecotUsers {
				name, _, _ := strings.Cut(u, "@")
				opts.Users = append(opts.Users, dovecottest.User{Name: u, Password: passwords[name]})
			}
			dc := startNamesDovecot(t, "", opts)
			k := startNamesKanmon(t, dc, tc.users, "")
			carol := strings.Replace(tc.alice, "alice", "carol", 1)
			for _, p := range nameProtos {
				wantLoggedIn(t, k, p, "127.0.0.1", tc.typedAlice, k.Passcode("alice", "Thunderbird"))
				wantLoggedIn(t, k, p, "127.0.0.1", tc.typedCarol, carolPassword)
				for _, name := range []string{tc.alice, carol} {
					want := fmt.Sprintf("%s-login: Info: Login: user=<%s>,", p.name, name)
					waitFor(t, 5*time.Second, "Dovecot to log "+want, func() bool { return strings.Contains(dc.Log(), want) })
				}
			}
			if n := countLogLines(k.Logs(), "msg=login ", "user="+carol+" ", "via=passthrough"); n != len(nameProtos) {
				t.Errorf("%d msg=login lines with user=%s via=passthrough, want %d", n, carol, len(nameProtos))
			}
		})
	}
}

// portalClient is a plain HTTP client of the portal, with a cookie jar,
// that does not follow redirects.
type portalClient struct {
	t    *testing.T
	base string
	http *http.Client
}

// csrfRE finds the form's CSRF token in a page.
var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn fills the sign-in form (GET /signin, then POST it) and returns
// the page it ends on: the account page after a redirect to it, or the
// sign-in form again.
func (c *portalClient) signIn(user, password, code string) string {
	c.t.Helper()
	m := csrfRE.FindStringSubmatch(c.get("/signin"))
	if m == nil {
		c.t.Fatal("GET /signin: no csrf field")
	}
	resp, err := c.http.PostForm(c.base+"/signin", url.Values{"csrf": {m[1]}, "user": {user}, "password": {password}, "code": {code}})
	if err != nil {
		c.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusSeeOther && resp.Header.Get("Location") == "/account" {
		return c.get("/account")
	}
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("POST /signin as %s: HTTP %d", user, resp.StatusCode)
	}
	return string(body)
}

// get fetches path and returns the body; anything but 200 fails.
func (c *portalClient) get(path string) string {
	c.t.Helper()
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	return string(body)
}

// The portal (`kanmon serve`, plain HTTP) signs "ALICE@KYOKYO-U.AC.JP" in
// as alice with her 2FA: without a code she is refused, with her TOTP code
// she is on the account page of alice with 2FA on. "alice@other.example"
// is refused; carol signs in under her address as carol with 2FA off.
func TestE2EUserNamesPortal(t *testing.T) {
	dc := startNamesDovecot(t, "%Ln", dovecottest.Options{}, "alice", "carol")
	bin := buildKanmon(t)
	f := serveFiles(t, dc, kanmontest.Options{Portal: &kanmontest.Portal{}, Users: campusUsers,
		Passcodes: map[string][]string{"alice": {"Thunderbird"}}})
	secret, err := otp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.EnrollTOTP(auth.OpenStore(filepath.Join(f.Dir, "accounts.toml")), filepath.Join(f.Dir, "state"), "alice", secret); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, bin, f.ConfigPath, f.PortalAddr)
	portal := func() *portalClient {
		jar, _ := cookiejar.New(nil)
		return &portalClient{t: t, base: "https://" + f.PortalAddr, http: &http.Client{
			Jar: jar, Transport: &http.Transport{TLSClientConfig: f.ClientTLS},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	}
	onAccount := func(page, user string, on bool) bool {
		return strings.Contains(page, fmt.Sprintf(`id="twofa-status" data-on="%t"`, on)) &&
			strings.Contains(page, "<strong>"+user+"</strong>")
	}
	refused := func(what, page string) {
		t.Helper()
		if strings.Contains(page, `id="twofa-status"`) || !strings.Contains(page, `id="error"`) {
			t.Errorf("%s: want the sign-in form with #error, got:\n%s", what, page)
		}
	}
	refused("alice's domain spelling without a code", portal().signIn("alice@"+campusDomain, alicePassword, ""))
	refused("alice in another domain", portal().signIn("alice@other.example", alicePassword, otp.Code(secret, time.Now())))
	if page := portal().signIn("ALICE@KYOKYO-U.AC.JP", alicePassword, otp.Code(secret, time.Now())); !onAccount(page, "alice", true) {
		t.Errorf("ALICE@KYOKYO-U.AC.JP with her TOTP code: want alice's account page with 2FA on, got:\n%s", page)
	}
	if page := portal().signIn("carol@"+campusDomain, carolPassword, ""); !onAccount(page, "carol", false) {
		t.Errorf("carol@%s: want carol's account page with 2FA off, got:\n%s", campusDomain, page)
	}
	waitFor(t, 5*time.Second, "kanmon to log the portal's sign-ins", func() bool {
		log := p.log.String()
		return countLogLines(log, "msg=login ", "user=alice ", "second_factor=totp") == 1 &&
			countLogLines(log, "msg=login ", "user=carol ") == 1 &&
			countLogLines(log, `msg="login failed"`, "user=alice ", `reason="2FA account without a code"`) == 1 &&
			countLogLines(log, `msg="login failed"`, "user=alice@other.example ", fmt.Sprintf("reason=%q", auth.ReasonUserName)) == 1
	})
}
