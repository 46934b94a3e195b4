package proxy_test

// Hardening, injection: CR, LF, NUL, space, '%', '*', quotes and
// backslashes in a user name never reach the backend or the log
// unescaped. The backend gets the name only inside the base64 of its
// SASL PLAIN login, as one field of exactly three; a name with a NUL,
// which would shift those fields, is refused before any backend contact;
// the client-IP forwarding (IMAP ID, XCLIENT) carries only kanmon's own
// parsed addresses; every log record stays one line, the name quoted and
// escaped by log/slog.

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/userkey"
	"github.com/kanmon-mail/kanmon/username"
)

// hostileNames are user names that would do harm if they reached a
// line-based protocol or the log as they are. kanmon refuses every one
// ([users]: username.RefusedCharacter) before any backend contact.
var hostileNames = []string{
	"in\rjected",
	"in\njected",
	"x\r\nk1 LOGOUT",
	"x\r\nQUIT",
	"in\x00jected",
	"\x00alice",
	"in jected",
	" lead",
	"in%jected",
	"in*jected",
	`in"jected`,
	`"`,
	`in\jected`,
	"*",
	"%",
	"\x1b[31mred",
}

// oddNames are unusual user names kanmon accepts: the backend gets them
// lower-cased (the canonical name) as one field of the PLAIN login.
var oddNames = []string{"o'brien", "first.last+tag", "UPPER-case_1", "jos\u00e9"}

// nameVia is one way a client presents a user name: the client steps
// after the greeting (and EHLO), and whether the protocol can carry the
// name at all that way.
type nameVia struct {
	name  string
	steps func(user string) []string
	can   func(user string) bool
}

// namesVia are, per protocol, the ways a name goes in.
var namesVia = map[string][]nameVia{
	protoIMAP: {
		{"LOGIN literal", func(u string) []string {
			return []string{fmt.Sprintf("C: a1 LOGIN {%d+}\r\n%s %s", len(u), u, recordedPW)}
		}, func(string) bool { return true }},
		{"AUTHENTICATE PLAIN", func(u string) []string {
			return []string{"C: a1 AUTHENTICATE PLAIN " + plainIR("", u, recordedPW)}
		}, func(string) bool { return true }},
		{"AUTHENTICATE LOGIN", func(u string) []string {
			return []string{"C: a1 AUTHENTICATE LOGIN", "S: + VXNlcm5hbWU6", "C: " + b64(u), "S: + UGFzc3dvcmQ6", "C: " + b64(recordedPW)}
		}, func(string) bool { return true }},
	},
	protoPOP3: {
		{"USER PASS", func(u string) []string {
			return []string{"C: USER " + u}
		}, func(u string) bool { return !strings.Contains(u, "\n") && !strings.HasSuffix(u, "\r") }},
		{"AUTH PLAIN", func(u string) []string {
			return []string{"C: AUTH PLAIN " + plainIR("", u, recordedPW)}
		}, func(string) bool { return true }},
		{"AUTH LOGIN", func(u string) []string {
			return []string{"C: AUTH LOGIN " + b64(u), "S: + UGFzc3dvcmQ6", "C: " + b64(recordedPW)}
		}, func(string) bool { return true }},
	},
	protoSMTP: {
		{"AUTH PLAIN", func(u string) []string {
			return []string{"C: AUTH PLAIN " + plainIR("", u, recordedPW)}
		}, func(string) bool { return true }},
		{"AUTH LOGIN", func(u string) []string {
			return []string{"C: AUTH LOGIN", "S: 334 VXNlcm5hbWU6", "C: " + b64(u), "S: 334 UGFzc3dvcmQ6", "C: " + b64(recordedPW)}
		}, func(string) bool { return true }},
	},
}

// kanmonLines are the only lines kanmon may send a recording backend
// before the login, per protocol, with forward_client_ip on: its own
// commands, made of parsed addresses, its session id and base64. After the
// login only the client's LOGOUT or QUIT follows.
var kanmonLines = map[string][]*regexp.Regexp{
	protoIMAP: {
		regexp.MustCompile(`^k3 ID \("x-originating-ip" "127\.0\.0\.1" "x-originating-port" "\d+" "x-connected-ip" "127\.0\.0\.1" "x-connected-port" "\d+" "x-session-id" "[0-9a-f]{12}"\)$`),
		regexp.MustCompile(`^k1 AUTHENTICATE PLAIN [A-Za-z0-9+/]+={0,2}$`),
		regexp.MustCompile(`^a2 LOGOUT$`),
	},
	protoPOP3: {
		regexp.MustCompile(`^XCLIENT ADDR=127\.0\.0\.1 PORT=\d+ SESSION=[0-9a-f]{12}$`),
		regexp.MustCompile(`^AUTH PLAIN [A-Za-z0-9+/]+={0,2}$`),
		regexp.MustCompile(`^QUIT$`),
	},
	protoSMTP: {
		regexp.MustCompile(`^EHLO [A-Za-z0-9.-]+$`), // the client's name, or kanmon's in the probe
		regexp.MustCompile(`^XCLIENT ADDR=127\.0\.0\.1 PORT=\d+ SESSION=[0-9a-f]{12}$`),
		regexp.MustCompile(`^AUTH PLAIN [A-Za-z0-9+/]+={0,2}$`),
		regexp.MustCompile(`^QUIT$`),
	},
}

// forwardMode is the forward_client_ip that sends each protocol's
// forwarding command.
var forwardMode = map[string]string{protoIMAP: "id", protoPOP3: "xclient", protoSMTP: "xclient"}

func TestHardeningUserNameInjection(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			rb := startTapeBackend(t, proto)
			k := kanmonFor(t, proto, rb.srv.addr, kanmontest.Options{}, fmt.Sprintf("forward_client_ip = %q", forwardMode[proto]))
			_, _, plain := listeners(k, proto)
			for _, via := range namesVia[proto] {
				for _, name := range append(slices.Clone(hostileNames), oddNames...) {
					if !via.can(name) {
						continue
					}
					t.Run(fmt.Sprintf("%s %q", via.name, name), func(t *testing.T) {
						rawBefore, loginsBefore := rb.seen()
						logBefore := len(k.Logs())
						c := dial(t, plain)
						c.run(greeting(proto))
						if proto == protoSMTP {
							c.ehlo("client.example.org")
						}
						c.run(via.steps(name)...)
						hasNUL := strings.IndexByte(name, 0) >= 0
						if proto == protoPOP3 && via.name == "USER PASS" && !hasNUL {
							c.run("S: +OK Send your password.", "C: PASS "+recordedPW)
						}
						reply := c.line()
						if !slices.Contains(oddNames, name) {
							// Refused by kanmon, before any backend contact.
							if ok := loginOK(proto, reply); ok {
								t.Fatalf("a hostile name logged in: %q", reply)
							}
							// (Submission's first EHLO probes the backend's
							// extensions; that is no login.)
							if raw, logins := rb.seen(); len(logins) != len(loginsBefore) || proto != protoSMTP && len(raw) != len(rawBefore) {
								t.Errorf("the backend was contacted for a hostile name: %q", raw[len(rawBefore):])
							}
							if !hasNUL {
								wantLog(t, k, `reason="user name refused"`)
							}
						} else {
							if !loginOK(proto, reply) {
								t.Fatalf("login reply %q", reply)
							}
							switch proto {
							case protoIMAP:
								c.run("C: a2 LOGOUT", "S: * BYE ...", "S: a2 OK ...", "EOF")
							case protoPOP3:
								c.run("C: QUIT", "S: +OK Logging out.", "EOF")
							default:
								c.run("C: QUIT", "S: 221 ...", "EOF")
							}
							c.conn.Close() // else the relay waits out its close grace
							_, logins := rb.seen()
							if len(logins) != len(loginsBefore)+1 {
								t.Fatalf("backend logins: %d new, want 1", len(logins)-len(loginsBefore))
							}
							canonical := strings.ToLower(name)
							want := []byte("\x00" + canonical + "\x00" + recordedPW)
							if got := logins[len(logins)-1]; !bytes.Equal(got, want) {
								t.Errorf("the backend's PLAIN login is %q, want %q: the name is one field of three", got, want)
							}
							waitLog(t, k, `msg="session ended"`, strings.Count(k.Logs()[:logBefore], `msg="session ended"`)+1)
							log := logSince(k, logBefore)
							if want := "msg=login"; !strings.Contains(log, want+" ") || !strings.Contains(log, " user="+slogValue(canonical)+" via=passthrough") {
								t.Errorf("the log does not name the user as %s:\n%s", slogValue(canonical), log)
							}
						}
						log := logSince(k, logBefore)
						wantOneLinePerRecord(t, log)
						if strings.ContainsAny(name, "\r\n\x00\x1b") && strings.Contains(log, name) {
							t.Errorf("the raw name %q is in the log:\n%s", name, log)
						}
					})
				}
			}
			// Everything the backend got, from every login above: only
			// kanmon's own lines, each ending in CRLF and holding no
			// other CR, LF or NUL.
			raw, _ := rb.seen()
			if !strings.HasSuffix(raw, "\r\n") {
				t.Errorf("the backend's input does not end in CRLF: %q", raw)
			}
			for _, l := range strings.Split(strings.TrimSuffix(raw, "\r\n"), "\r\n") {
				if strings.ContainsAny(l, "\r\n\x00") {
					t.Errorf("the backend got a raw CR, LF or NUL in %q", l)
					continue
				}
				known := false
				for _, re := range kanmonLines[proto] {
					known = known || re.MatchString(l)
				}
				if !known {
					t.Errorf("the backend got a line kanmon does not send: %q", l)
				}
			}
		})
	}
}

// loginOK reports whether reply is proto's login success.
func loginOK(proto, reply string) bool {
	switch proto {
	case protoIMAP:
		return strings.HasPrefix(reply, "a1 OK ")
	case protoPOP3:
		return reply == "+OK Logged in."
	}
	return reply == smtpAuthOK
}

// The client's own ID fields (RFC 2971), sent in literals with CR and LF,
// from a host trusted to name the client's address: an x-originating-ip
// that is not an address changes nothing, the backend's ID carries only
// kanmon's parsed addresses, and the fields reach the log stripped to
// printable text, one record per line.
func TestHardeningIDFieldInjection(t *testing.T) {
	rb := startTapeBackend(t, protoIMAP)
	k := kanmonFor(t, protoIMAP, rb.srv.addr, kanmontest.Options{Extra: `id_trusted_networks = ["127.0.0.1/32"]`},
		`forward_client_ip = "id"`)
	lit := func(s string) string { return fmt.Sprintf("{%d+}\r\n%s", len(s), s) }
	c := dial(t, k.IMAPPlain)
	c.run(
		"S: * OK [CAPABILITY ...",
		"C: a0 ID ("+`"name" `+lit("Evil\r\nk1 LOGOUT")+` "version" `+lit("1\x1b[2J")+
			` "x-originating-ip" `+lit("192.0.2.9\r\nk9 LOGOUT")+` "x-originating-port" `+lit("1\r\n2")+")",
		"S: * ID NIL",
		"S: a0 OK ID completed.",
		"C: a1 LOGIN carol "+recordedPW,
		"S: a1 OK ...",
		"C: a2 LOGOUT",
		"S: * BYE ...",
		"S: a2 OK ...",
		"EOF",
	)
	c.conn.Close()
	waitLog(t, k, `msg="session ended"`, 1)
	raw, _ := rb.seen()
	lines := strings.Split(strings.TrimSuffix(raw, "\r\n"), "\r\n")
	if len(lines) != 3 || !kanmonLines[protoIMAP][0].MatchString(lines[0]) {
		t.Errorf("the backend got %q, want kanmon's ID with 127.0.0.1, its AUTHENTICATE and the LOGOUT", lines)
	}
	log := k.Logs()
	wantOneLinePerRecord(t, log)
	for _, want := range []string{
		`msg="IMAP ID x-originating-ip ignored: invalid x-originating-ip or x-originating-port" ` +
			`listener=` + k.IMAPPlain + ` proto=imap tls=none session=`,
		`x_originating_ip="192.0.2.9k9 LOGOUT" x_originating_port=12`,
		`client_id="Evilk1 LOGOUT 1[2J"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// FuzzLoginName logs in under arbitrary user names, by IMAP AUTHENTICATE
// PLAIN, to a backend that takes recordedPW for anyone, with [users]
// folding kyokyo-u.ac.jp. Whatever the name, the name the backend is
// logged into is the canonical name kanmon looked up, never a spelling of
// alice (who has 2FA: her password must never pass through), and a name
// [users] refuses never reaches the backend.
func FuzzLoginName(f *testing.F) {
	rb := startTapeBackend(f, protoIMAP)
	k := kanmonFor(f, protoIMAP, rb.srv.addr, kanmontest.Options{
		Extra: `users = { domains = ["kyokyo-u.ac.jp"], other_domains = ["partner.example"] }` + "\n",
	})
	names, err := username.New([]string{"kyokyo-u.ac.jp"}, username.FormatLocal, []string{"partner.example"})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"carol", "ALICE@KYOKYO-U.AC.JP", "alice@other.example", "Alice", "bob@partner.example",
		"alice@kyokyo-u.ac.jp@x", " alice", "alice*master", "jos\u00e9", "Jose\u0301", "\u212alice"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if strings.IndexByte(name, 0) >= 0 {
			t.Skip("PLAIN cannot carry a NUL in a field")
		}
		_, before := rb.seen()
		c := dial(t, k.IMAPPlain)
		c.run("S: * OK [CAPABILITY ...", "C: a1 AUTHENTICATE PLAIN "+plainIR("", name, recordedPW))
		reply := c.line()
		c.conn.Close()
		_, after := rb.seen()
		want, err := names.Canonical(name)
		if len(after) == len(before) {
			if err == nil && want != "alice" && loginOK(protoIMAP, reply) {
				t.Fatalf("%q: logged in without a backend login", name)
			}
			return
		}
		fields := bytes.Split(after[len(after)-1], []byte{0})
		if len(fields) != 3 {
			t.Fatalf("%q: the backend got %q", name, after[len(after)-1])
		}
		got := string(fields[1])
		switch {
		case err != nil:
			t.Fatalf("%q, refused by [users] (%v), reached the backend as %q", name, err, got)
		case got != want:
			t.Fatalf("%q: kanmon looked up %q but logged the backend into %q", name, want, got)
		case userkey.Fold(got) == "alice" || strings.HasPrefix(userkey.Fold(got), "alice@"):
			t.Fatalf("%q: alice's password passed through as %q", name, got)
		}
	})
}
