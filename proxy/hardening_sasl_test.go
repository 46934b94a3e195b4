package proxy_test

// Hardening, SASL: empty responses, truncated PLAIN (one or two fields),
// bad base64 and "*" cancels are refused with each protocol's own reply
// and never reach the backend; a failed or cancelled exchange leaves no
// state behind, so that a retry on the same connection with the right
// passcode logs in as the user it names; and an AUTH after a successful
// one is the backend's business, never a second login of kanmon's.
// (Cancels and bad base64 at the first prompt are in TestFrontsSASLErrors;
// SMTP's AUTH after AUTH in TestSMTPSecondAuth.)

import (
	"strings"
	"testing"
)

// Malformed exchanges, per protocol: each ends in the reply given, and the
// connection goes on (NOOP).
func TestHardeningSASLMalformed(t *testing.T) {
	for _, tc := range []struct {
		proto     string
		failed    string // the uniform authentication-failed reply
		malformed string
		badBase64 string
		cancelled string
	}{
		{
			proto:     protoIMAP,
			failed:    "S: a1 " + failedReply,
			malformed: "S: a1 BAD Malformed AUTHENTICATE response.",
			badBase64: "S: a1 BAD Invalid base64 in AUTHENTICATE response.",
			cancelled: "S: a1 BAD AUTHENTICATE cancelled.",
		},
		{
			proto:     protoPOP3,
			failed:    "S: " + pop3Failed,
			malformed: "S: -ERR Malformed AUTH response.",
			badBase64: "S: -ERR Invalid base64 in AUTH response.",
			cancelled: "S: -ERR AUTH cancelled.",
		},
		{
			proto:     protoSMTP,
			failed:    "S: " + smtpFailed,
			malformed: "S: 501 5.5.2 Malformed authentication response",
			badBase64: "S: 501 5.5.2 Cannot decode response",
			cancelled: "S: 501 5.0.0 Authentication cancelled",
		},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			// The commands and prompts of this protocol.
			auth, cont, userPrompt, passPrompt := "C: AUTH ", "S: + ", "S: + VXNlcm5hbWU6", "S: + UGFzc3dvcmQ6"
			switch tc.proto {
			case protoIMAP:
				auth = "C: a1 AUTHENTICATE "
			case protoSMTP:
				cont, userPrompt, passPrompt = "S: 334 ", "S: 334 VXNlcm5hbWU6", "S: 334 UGFzc3dvcmQ6"
			}
			cases := []struct {
				name  string
				steps []string
			}{
				{"empty PLAIN response", []string{auth + "PLAIN", cont, "C: ", tc.malformed}},
				{"empty initial response", []string{auth + "PLAIN =", tc.malformed}},
				{"\"=\" as a continuation response", []string{auth + "PLAIN", cont, "C: =", tc.badBase64}},
				{"PLAIN with one field", []string{auth + "PLAIN " + b64("alice"), tc.malformed}},
				{"PLAIN with two fields", []string{auth + "PLAIN " + b64("\x00alice"), tc.malformed}},
				{"PLAIN with two fields, authzid and authcid", []string{auth + "PLAIN " + b64("alice\x00alice"), tc.malformed}},
				{"PLAIN with four fields", []string{auth + "PLAIN " + b64("\x00alice\x00pw\x00more"), tc.malformed}},
				{"PLAIN truncated in a continuation", []string{auth + "PLAIN", cont, "C: " + b64("\x00alice"), tc.malformed}},
				{"bad base64 initial response", []string{auth + "PLAIN !!!!", tc.badBase64}},
				{"bad base64 padding", []string{auth + "PLAIN QUFB=", tc.badBase64}},
				{"bad base64 LOGIN password", []string{auth + "LOGIN", userPrompt, "C: " + b64("alice"), passPrompt, "C: not base64!", tc.badBase64}},
				{"cancel LOGIN password", []string{auth + "LOGIN", userPrompt, "C: " + b64("alice"), passPrompt, "C: *", tc.cancelled}},
				{"empty LOGIN user and password", []string{auth + "LOGIN", userPrompt, "C: ", passPrompt, "C: ", tc.failed}},
				{"empty LOGIN password", []string{auth + "LOGIN " + b64("alice"), passPrompt, "C: ", tc.failed}},
			}
			var backendAccepts func() int64
			var addr string
			switch tc.proto {
			case protoIMAP:
				w := newWorld(t, worldOptions{})
				addr, backendAccepts = w.k.IMAPPlain, w.backend.accepts.Load
			case protoPOP3:
				w := newPOP3World(t, worldOptions{})
				addr, backendAccepts = w.k.POP3Plain, w.backend.accepts.Load
			default:
				w := newSMTPWorld(t, worldOptions{})
				addr, backendAccepts = w.k.SubmissionPlain, w.be.auths.Load
			}
			before := backendAccepts()
			for _, cs := range cases {
				t.Run(cs.name, func(t *testing.T) {
					c := dial(t, addr)
					c.run(greeting(tc.proto))
					if tc.proto == protoSMTP {
						c.ehlo("client.example.org")
					}
					c.run(cs.steps...)
					switch tc.proto {
					case protoIMAP:
						c.run("C: a2 NOOP", "S: a2 OK NOOP completed.")
					case protoPOP3:
						c.run("C: NOOP", "S: +OK")
					default:
						c.run("C: NOOP", "S: "+smtpOK)
					}
				})
			}
			if n := backendAccepts() - before; n != 0 {
				t.Errorf("the backend was asked %d times", n)
			}
		})
	}
}

// A failed login and a cancelled exchange on a connection leave nothing
// behind: the next exchange starts afresh and logs in as the user it
// names, with the right passcode, whatever the failed ones named. After
// that login an AUTH is the backend's to answer: kanmon neither runs a
// second login nor opens a second backend connection.
func TestHardeningSASLRetryAndReauth(t *testing.T) {
	t.Run(protoIMAP, func(t *testing.T) {
		w := newWorld(t, worldOptions{})
		c := dial(t, w.k.IMAPPlain)
		c.run(
			"S: * OK [CAPABILITY ...",
			"C: a1 AUTHENTICATE PLAIN "+plainIR("", "alice", "WRONGWRONGWRONGW"),
			"S: a1 "+failedReply,
			// LOGIN: a user name given, then cancelled at the password.
			"C: a2 AUTHENTICATE LOGIN",
			"S: + VXNlcm5hbWU6",
			"C: "+b64("carol"),
			"S: + UGFzc3dvcmQ6",
			"C: *",
			"S: a2 BAD AUTHENTICATE cancelled.",
			// The right passcode, and no user name left over from above.
			"C: a3 AUTHENTICATE LOGIN",
			"S: + VXNlcm5hbWU6",
			"C: "+b64("alice"),
			"S: + UGFzc3dvcmQ6",
			"C: "+b64(w.passcode),
			"S: a3 OK [CAPABILITY ...",
		)
		c.run("C: a4 AUTHENTICATE PLAIN " + plainIR("", "carol", carolPW))
		if l := c.line(); !strings.HasPrefix(l, "a4 BAD ") && !strings.HasPrefix(l, "a4 NO ") {
			t.Errorf("a second AUTHENTICATE got %q, want the backend's BAD or NO", l)
		}
		c.run("C: a5 LOGIN carol " + carolPW)
		if l := c.line(); !strings.HasPrefix(l, "a5 BAD ") && !strings.HasPrefix(l, "a5 NO ") {
			t.Errorf("a LOGIN after the login got %q, want the backend's BAD or NO", l)
		}
		c.run("C: a6 SELECT INBOX", "S*: a6 OK [READ-WRITE] ...")
		if n := w.backend.accepts.Load(); n != 1 {
			t.Errorf("%d backend connections, want the one login", n)
		}
		log := w.k.Logs()
		if n := strings.Count(log, "msg=login "); n != 1 || !strings.Contains(log, "user=alice via=passcode") {
			t.Errorf("%d logins in the log, want alice's one:\n%s", n, log)
		}
	})
	t.Run(protoPOP3, func(t *testing.T) {
		w := newPOP3World(t, worldOptions{})
		w.fake.deliver("alice", "for alice")
		c := dial(t, w.k.POP3Plain)
		c.run(
			"S: "+pop3Greeting,
			"C: USER carol",
			"S: +OK Send your password.",
			"C: PASS "+alicePW, // not carol's
			"S: "+pop3Failed,
			// The USER above is gone: PASS alone is refused.
			"C: PASS "+w.passcode,
			"S: -ERR Send USER first.",
			"C: USER alice",
			"S: +OK Send your password.",
			"C: PASS "+w.passcode,
			"S: +OK Logged in.",
		)
		// Now the backend's: its own errors, no login of kanmon's.
		c.run("C: AUTH PLAIN "+plainIR("", "carol", carolPW), "S: -ERR ...")
		c.run("C: USER carol", "S: -ERR ...")
		c.run("C: STAT", "S: +OK 1 ...")
		if n := w.backend.accepts.Load(); n != 2 {
			t.Errorf("%d backend connections, want carol's refused passthrough and alice's login", n)
		}
		c.run("C: QUIT", "S: +OK Logging out.", "EOF")
	})
	t.Run(protoPOP3+" AUTH", func(t *testing.T) {
		w := newPOP3World(t, worldOptions{})
		c := dial(t, w.k.POP3Plain)
		c.run(
			"S: "+pop3Greeting,
			"C: AUTH LOGIN "+b64("carol"),
			"S: + UGFzc3dvcmQ6",
			"C: *",
			"S: -ERR AUTH cancelled.",
			"C: AUTH PLAIN "+plainIR("", "alice", "WRONGWRONGWRONGW"),
			"S: "+pop3Failed,
			"C: AUTH PLAIN",
			"S: + ",
			"C: "+plainIR("", "alice", w.passcode),
			"S: +OK Logged in.",
		)
		expectPOP3Session(t, w, c, "alice")
	})
	t.Run(protoSMTP, func(t *testing.T) {
		w := newSMTPWorld(t, worldOptions{})
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.ehlo("client.example.org")
		c.run(
			"C: AUTH LOGIN",
			"S: 334 VXNlcm5hbWU6",
			"C: "+b64("carol"),
			"S: 334 UGFzc3dvcmQ6",
			"C: *",
			"S: 501 5.0.0 Authentication cancelled",
			"C: AUTH PLAIN "+plainIR("", "alice", "WRONGWRONGWRONGW"),
			"S: "+smtpFailed,
			"C: AUTH PLAIN",
			"S: 334 ",
			"C: "+plainIR("", "alice", w.passcode),
			"S: "+smtpAuthOK,
		)
		// The second AUTH is the backend's (see TestSMTPSecondAuth).
		c.run("C: AUTH PLAIN "+plainIR("", "carol", carolPW), "S: 503 5.5.1 Already authenticated")
		if n := w.be.auths.Load(); n != 1 {
			t.Errorf("the backend saw %d AUTH exchanges, want the one login", n)
		}
		expectSMTPSession(t, w, c, "alice")
	})
}
