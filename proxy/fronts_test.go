package proxy_test

// The protocol drivers: what a test that holds for all three fronts needs
// to know of one protocol. A table test (fronts_*_test.go) runs the same
// transcript against IMAP, POP3 and submission, with the same assertions;
// only the spelling of the commands and the exact reply lines come from
// the driver.

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// method is one way a client presents a user name and a secret.
type method int

const (
	// byLogin is the protocol's plain login: IMAP LOGIN, POP3 USER and
	// PASS. Submission has none and says AUTH PLAIN with an initial
	// response.
	byLogin method = iota
	// byPlainIR is AUTH(ENTICATE) PLAIN with an initial response.
	byPlainIR
	// byPlain is AUTH(ENTICATE) PLAIN, the response after the
	// continuation.
	byPlain
	// bySASLLogin is AUTH(ENTICATE) LOGIN with the user name as initial
	// response and the secret after the password prompt.
	bySASLLogin
)

// frontWorld is one protocol's world: kanmon in front of an in-process
// backend with alice (2FA, one passcode) and carol (no 2FA).
type frontWorld struct {
	k        *kanmontest.Kanmon
	passcode string
	// asked counts the backend's logins (IMAP, POP3: connections;
	// submission: AUTH commands, since EHLO probes connect too).
	asked func() int64
}

// front is the driver of one protocol.
type front struct {
	proto string
	// world starts the protocol's in-process world.
	world func(t *testing.T, o worldOptions) frontWorld
	// greeting matches the first line on every listener.
	greeting string
	// ready follows the greeting where a login needs more first (EHLO).
	ready func(c *conv)
	// authCmd starts a SASL exchange; cont is the continuation prefix.
	authCmd, cont string
	// loginCmd and passCmd spell byLogin (passCmd "" when one line).
	loginCmd, passCmd string
	// loginPrompt is the server's reply to loginCmd when passCmd follows.
	loginPrompt string
	// The exact replies, IMAP's with the tag a1 that every driver
	// command carries.
	loggedIn, failed, unavailable, privacy, notAllowed      string
	saslMechanism, saslCancelled, saslBase64, saslMalformed string
	// saslCancelIR answers "*" as an initial response: a cancel in POP3
	// and SMTP; a syntax error in IMAP, whose initial-resp is base64 or
	// "=" (RFC 4959 §7).
	saslCancelIR string
	// alive is a command and its reply: the session is still open.
	alive []string
	// tooMany is what ends a session after three bad commands.
	tooMany []string
	// idle and shuttingDown end pre-auth sessions.
	idle, shuttingDown string
	// startTLS is the upgrade command, its reply and the name the log
	// gives it.
	startTLS, startTLSOK, startTLSName string
	// backendGreeting is what a fake backend of the protocol says first.
	backendGreeting string
}

// fronts drives the three protocols.
var fronts = []front{
	{
		proto: protoIMAP,
		world: func(t *testing.T, o worldOptions) frontWorld {
			w := newWorld(t, o)
			return frontWorld{k: w.k, passcode: w.passcode, asked: w.backend.accepts.Load}
		},
		greeting:        "S: * OK [CAPABILITY ...",
		ready:           func(*conv) {},
		authCmd:         "a1 AUTHENTICATE",
		cont:            "+ ",
		loginCmd:        "a1 LOGIN",
		loggedIn:        "a1 OK [CAPABILITY ...",
		failed:          "a1 " + failedReply,
		unavailable:     "a1 " + unavailReply,
		privacy:         "a1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in.",
		notAllowed:      "a1 BAD Command not allowed before authentication.",
		saslMechanism:   "a1 NO Unsupported authentication mechanism.",
		saslCancelled:   "a1 BAD AUTHENTICATE cancelled.",
		saslBase64:      "a1 BAD Invalid base64 in AUTHENTICATE response.",
		saslMalformed:   "a1 BAD Malformed AUTHENTICATE response.",
		saslCancelIR:    "a1 BAD Syntax error in arguments",
		alive:           []string{"C: a2 NOOP", "S: a2 OK NOOP completed."},
		tooMany:         []string{"S: * BYE Too many invalid commands.", "EOF"},
		idle:            "* BYE Autologout; idle for too long.",
		shuttingDown:    "* BYE Server shutting down.",
		startTLS:        "a0 STARTTLS",
		startTLSOK:      "a0 OK Begin TLS negotiation now.",
		startTLSName:    "STARTTLS",
		backendGreeting: "* OK [CAPABILITY IMAP4rev1 SASL-IR] fake",
	},
	{
		proto: protoPOP3,
		world: func(t *testing.T, o worldOptions) frontWorld {
			w := newPOP3World(t, o)
			return frontWorld{k: w.k, passcode: w.passcode, asked: w.backend.accepts.Load}
		},
		greeting:        "S: " + pop3Greeting,
		ready:           func(*conv) {},
		authCmd:         "AUTH",
		cont:            "+ ",
		loginCmd:        "USER",
		passCmd:         "PASS",
		loginPrompt:     "+OK Send your password.",
		loggedIn:        "+OK Logged in.",
		failed:          pop3Failed,
		unavailable:     pop3Unavailable,
		privacy:         pop3Privacy,
		notAllowed:      pop3NotAllowed,
		saslMechanism:   "-ERR Unsupported authentication mechanism.",
		saslCancelled:   "-ERR AUTH cancelled.",
		saslBase64:      "-ERR Invalid base64 in AUTH response.",
		saslMalformed:   "-ERR Malformed AUTH response.",
		saslCancelIR:    "-ERR AUTH cancelled.",
		alive:           []string{"C: NOOP", "S: +OK"},
		tooMany:         []string{"EOF"},
		idle:            "-ERR Disconnected for inactivity.",
		shuttingDown:    "-ERR Server shutting down.",
		startTLS:        "STLS",
		startTLSOK:      "+OK Begin TLS negotiation now.",
		startTLSName:    "STLS",
		backendGreeting: "+OK fake ready",
	},
	{
		proto: protoSMTP,
		world: func(t *testing.T, o worldOptions) frontWorld {
			w := newSMTPWorld(t, o)
			return frontWorld{k: w.k, passcode: w.passcode, asked: w.be.auths.Load}
		},
		greeting:        smtpGreeting,
		ready:           func(c *conv) { c.ehlo("client.example.org") },
		authCmd:         "AUTH",
		cont:            "334 ",
		loggedIn:        smtpAuthOK,
		failed:          smtpFailed,
		unavailable:     smtpUnavailable,
		privacy:         smtpEncryption,
		notAllowed:      smtpAuthNeeded,
		saslMechanism:   "504 5.5.4 Unrecognized authentication type",
		saslCancelled:   "501 5.0.0 Authentication cancelled",
		saslBase64:      "501 5.5.2 Cannot decode response",
		saslMalformed:   "501 5.5.2 Malformed authentication response",
		saslCancelIR:    "501 5.0.0 Authentication cancelled",
		alive:           []string{"C: NOOP", "S: " + smtpOK},
		tooMany:         []string{"S: " + smtpTooMany, "EOF"},
		idle:            "421 4.4.2 Idle for too long; closing connection",
		shuttingDown:    "421 4.3.2 Server shutting down",
		startTLS:        "STARTTLS",
		startTLSOK:      "220 2.0.0 Ready to start TLS",
		startTLSName:    "STARTTLS",
		backendGreeting: "220 fake ESMTP",
	},
}

// each runs test once per protocol, as a subtest named for it.
func each(t *testing.T, test func(t *testing.T, f front)) {
	for _, f := range fronts {
		t.Run(f.proto, func(t *testing.T) { test(t, f) })
	}
}

// open dials addr and reads the greeting; ready says what must come
// before a login.
func (f front) open(t *testing.T, addr string) *conv {
	t.Helper()
	c := dial(t, addr)
	c.run(f.greeting)
	f.ready(c)
	return c
}

// openFrom is open from the local address ip (any 127/8 address).
func (f front) openFrom(t *testing.T, ip, addr string) *conv {
	t.Helper()
	c := newConv(t, dialFrom(t, ip, addr))
	c.run(f.greeting)
	f.ready(c)
	return c
}

// plain is the listener without TLS on which credentials are taken.
func (f front) plain(k *kanmontest.Kanmon) string {
	_, _, plain := listeners(k, f.proto)
	return plain
}

// say is the transcript of one login by m up to, not including, its
// final reply.
func (f front) say(m method, authzid, user, secret string) []string {
	switch m {
	case byLogin:
		if f.loginCmd == "" {
			return f.say(byPlainIR, authzid, user, secret)
		}
		if f.passCmd == "" {
			return []string{fmt.Sprintf("C: %s %s %q", f.loginCmd, user, secret)}
		}
		return []string{"C: " + f.loginCmd + " " + user, "S: " + f.loginPrompt, "C: " + f.passCmd + " " + secret}
	case byPlainIR:
		return []string{"C: " + f.authCmd + " PLAIN " + plainIR(authzid, user, secret)}
	case byPlain:
		return []string{"C: " + f.authCmd + " PLAIN", "S: " + f.cont, "C: " + plainIR(authzid, user, secret)}
	}
	return []string{"C: " + f.authCmd + " LOGIN " + b64(user), "S: " + f.cont + "UGFzc3dvcmQ6", "C: " + b64(secret)}
}

// login runs a login by m and returns the final reply.
func (f front) login(c *conv, m method, user, secret string) string {
	c.t.Helper()
	c.run(f.say(m, "", user, secret)...)
	return c.line()
}

// startKanmon starts kanmon with the protocol's backend at addr (see
// kanmonFor), with the right master credentials and alice's passcode.
func (f front) startKanmon(t *testing.T, addr string, backendKeys ...string) *kanmontest.Kanmon {
	t.Helper()
	return kanmonFor(t, f.proto, addr, kanmontest.Options{}, backendKeys...)
}

// FuzzPOP3PreAuth sends arbitrary client bytes to the pre-auth POP3 front
// (and, after a login, through the relay to the fake backend). Whatever
// arrives, the session must not panic, every reply line must fit RFC
// 2449 §4, and a client that stops sending must be let go. (The lines of
// a multi-line reply have no status, so their shape is not checked.)
func FuzzPOP3PreAuth(f *testing.F) {
	w := newPOP3World(f, worldOptions{})
	fuzzFront(f, w.k.POP3Plain, w.k.Logs, nil,
		"CAPA\r\nNOOP\r\nQUIT\r\n",
		"USER alice\r\nPASS "+w.passcode+"\r\nLIST\r\nQUIT\r\n",
		"USER carol\r\nPASS "+carolPW+"\r\nSTAT\r\n",
		"AUTH PLAIN "+plainIR("", "alice", w.passcode)+"\r\nRETR 1\r\n",
		"AUTH PLAIN\r\n"+plainIR("carol", "alice", "x")+"\r\n",
		"AUTH LOGIN\r\n"+b64("alice")+"\r\n*\r\n",
		"AUTH\r\nAUTH CRAM-MD5\r\nAPOP a b\r\n",
		"STLS\r\nUSER\r\nPASS\r\n",
		"USER a\x00b\r\nPASS \xff\xfe\r\n",
		strings.Repeat("x", 300)+"\r\n",
		"NOOP\nNOOP\r\rNOOP\r\n",
	)
}

// FuzzSMTPPreAuth sends arbitrary client bytes to the pre-auth SMTP front
// (and, after a login, through the relay to the go-smtp backend).
// Whatever arrives, the session must not panic, every reply line must fit
// RFC 5321 §4.5.3.1.5 and look like an SMTP reply line, and a client that
// stops sending must be let go.
func FuzzSMTPPreAuth(f *testing.F) {
	w := newSMTPWorld(f, worldOptions{})
	fuzzFront(f, w.k.SubmissionPlain, w.k.Logs, smtpReplyLine,
		"EHLO a.example\r\nNOOP\r\nRSET\r\nHELP\r\nQUIT\r\n",
		"EHLO a\r\nAUTH PLAIN "+plainIR("", "alice", w.passcode)+"\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO a\r\nAUTH LOGIN "+b64("carol")+"\r\n"+b64(carolPW)+"\r\nBDAT 3 LAST\r\nabc",
		"EHLO a\r\nAUTH PLAIN\r\n"+plainIR("carol", "alice", "x")+"\r\nAUTH LOGIN\r\n*\r\n",
		"EHLO a\r\nAUTH\r\nAUTH CRAM-MD5\r\nAUTH PLAIN =\r\n",
		"STARTTLS\r\nAUTH PLAIN\r\nMAIL FROM:<>\r\n",
		"BDAT 99999999999 LAST\r\nxyz",
		"BDAT x\r\nEHLO [IPv6:::1]\r\nEHLO a\x00b\r\n",
		strings.Repeat("x", 600)+"\r\n",
		"NOOP\nNOOP\r\rNOOP\r\n",
	)
}

// fuzzFront fuzzes the line-based front listening at addr: it writes the
// input, half-closes, and reads every reply line until kanmon closes.
// Each line must end in CRLF, fit 512 octets and, if replyLine is set,
// satisfy it; the session must end within ioTimeout and never panic
// (logs is kanmon's log).
func fuzzFront(f *testing.F, addr string, logs func() string, replyLine func(string) bool, seeds ...string) {
	for _, seed := range seeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := net.DialTimeout("tcp", addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(ioTimeout))
		go func() {
			_, _ = conn.Write(input)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		br := bufio.NewReader(conn)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("session still open %v after the client stopped sending", ioTimeout)
				}
				break
			}
			if len(line) > 512 || !strings.HasSuffix(line, "\r\n") || (replyLine != nil && !replyLine(line)) {
				t.Fatalf("reply line of %d octets, without CRLF or not a reply: %.80q", len(line), line)
			}
		}
		if log := logs(); strings.Contains(log, "session panic") {
			t.Fatalf("session panicked:\n%s", log)
		}
	})
}

// smtpReplyLine reports whether line starts like an SMTP reply line: a
// code and then a space, a hyphen or the line end (RFC 5321 §4.2).
func smtpReplyLine(line string) bool {
	if len(line) < 5 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
		return false
	}
	return line[3] == ' ' || line[3] == '-' || line[3:] == "\r\n"
}
