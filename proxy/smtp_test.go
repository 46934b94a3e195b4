package proxy_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// The backend's extensions in kanmon's EHLO reply (the backend's SIZE
// limit among them), kanmon's own STARTTLS and AUTH where they belong,
// and the commands that need no login.
func TestSMTPGreetingAndEHLO(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	mirrored := []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "BINARYMIME", "DSN", "SIZE " + strconv.Itoa(backendSize)}
	check := func(t *testing.T, lines []string, starttls, auth bool) {
		t.Helper()
		for _, m := range mirrored {
			if !slices.Contains(lines, m) {
				t.Errorf("EHLO lacks the backend's %q: %q", m, lines)
			}
		}
		if slices.Contains(lines, "STARTTLS") != starttls {
			t.Errorf("EHLO %q: STARTTLS offered = %v, want %v", lines, !starttls, starttls)
		}
		var auths []string
		for _, l := range lines {
			if strings.HasPrefix(strings.ToUpper(l), "AUTH") {
				auths = append(auths, l)
			}
		}
		if want := []string{"AUTH PLAIN LOGIN"}; !auth && len(auths) != 0 || auth && !slices.Equal(auths, want) {
			t.Errorf("EHLO AUTH lines %q (auth allowed: %v)", auths, auth)
		}
	}
	t.Run("plain loopback", func(t *testing.T) {
		c := dialSMTP(t, w.k.SubmissionPlain)
		check(t, c.ehlo("client.example.org"), false, true)
		c.run(
			"C: HELO client.example.org",
			"S: 250 ...",
			"C: NOOP",
			"S: "+smtpOK,
			"C: RSET",
			"S: "+smtpOK,
			"C: HELP",
			"S: 214 2.0.0 ...",
			"C: STARTTLS",
			"S: 502 5.5.1 STARTTLS is not available here",
			"C: QUIT",
			"S: 221 2.0.0 Bye",
			"EOF",
		)
	})
	t.Run("implicit TLS", func(t *testing.T) {
		c := dialTLS(t, w.k.SubmissionS, w.k.ClientTLS)
		c.run(smtpGreeting)
		check(t, c.ehlo("client.example.org"), false, true)
		c.run("C: STARTTLS", "S: 503 5.5.1 TLS already active")
	})
	t.Run("STARTTLS", func(t *testing.T) {
		c := dialSMTP(t, w.k.SubmissionStartTLS)
		check(t, c.ehlo("client.example.org"), true, false)
		c.run("C: STARTTLS now", "S: 501 5.5.4 Syntax error (no parameters allowed)", "C: starttls", "S: 220 2.0.0 Ready to start TLS")
		c.startTLS(w.k.ClientTLS)
		c.run("C: AUTH PLAIN "+plainIR("", "alice", w.passcode), "S: 503 5.5.1 Send EHLO first")
		check(t, c.ehlo("client.example.org"), false, true)
		c.run("C: AUTH PLAIN "+plainIR("", "alice", w.passcode), "S: "+smtpAuthOK)
		expectSMTPSession(t, w, c, "alice")
	})
	// One probe served every EHLO; the login refreshed the list.
	if n := w.fwd.accepts.Load(); n != 2 {
		t.Errorf("backend connections: %d, want one probe and one login", n)
	}
}

// Every way of presenting alice's passcode logs her in, and the session is
// then the backend's.
func TestSMTPLoginWithPasscode(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	pc := w.passcode
	spaced := strings.ToLower(auth.FormatPasscode(pc))
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"AUTH PLAIN initial response", []string{"C: AUTH PLAIN " + plainIR("", "alice", pc)}},
		{"AUTH PLAIN authzid = authcid, spaced", []string{"C: auth plain " + plainIR("alice", "alice", spaced)}},
		{"AUTH PLAIN continuation", []string{"C: AUTH PLAIN", "S: 334 ", "C: " + plainIR("", "alice", pc)}},
		{"AUTH LOGIN", []string{
			"C: AUTH LOGIN",
			"S: 334 VXNlcm5hbWU6",
			"C: " + b64("alice"),
			"S: 334 UGFzc3dvcmQ6",
			"C: " + b64(spaced),
		}},
		{"AUTH LOGIN initial response", []string{"C: AUTH LOGIN " + b64("alice"), "S: 334 UGFzc3dvcmQ6", "C: " + b64(pc)}},
		{"after HELO", []string{"C: HELO client.example.org", "S: 250 ...", "C: AUTH PLAIN " + plainIR("", "alice", pc)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSMTP(t, w.k.SubmissionPlain)
			if !strings.HasPrefix(tc.name, "after HELO") {
				c.ehlo("client.example.org")
			}
			c.run(tc.steps...)
			c.run("S: " + smtpAuthOK)
			expectSMTPSession(t, w, c, "alice")
		})
	}
	t.Run("implicit TLS", func(t *testing.T) {
		c := dialTLS(t, w.k.SubmissionS, w.k.ClientTLS)
		c.run(smtpGreeting)
		c.smtpLogin("alice", pc)
		expectSMTPSession(t, w, c, "alice")
	})
	wantLog(t, w.k, "proto=submission", "via=passcode app="+app)
	noLeak(t, w.k.Logs(), pc, spaced, masterPW, b64(pc), plainIR("", "alice", pc))
}

// Without 2FA and from a trusted network the user's own password passes
// through; one too long for an initial response at the backend goes after
// the backend's 334, and a long AUTH line is accepted from the client.
func TestSMTPPassthrough(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	c := dialSMTP(t, w.k.SubmissionPlain)
	c.smtpLogin("carol", carolPW)
	expectSMTPSession(t, w, c, "carol")
	if n := w.be.continuations.Load(); n != 0 {
		t.Errorf("a short login used %d continuations at the backend", n)
	}
	c = dialSMTP(t, w.k.SubmissionPlain)
	c.smtpLogin("erin", erinPW) // a 4 KiB AUTH line
	expectSMTPSession(t, w, c, "erin")
	if n := w.be.continuations.Load(); n != 1 {
		t.Errorf("the long login used %d continuations at the backend, want 1", n)
	}
	noLeak(t, w.k.Logs(), carolPW, erinPW)
}

// The other refusals before AUTH, each with its code; none reaches the
// backend.
func TestSMTPPreAuthErrors(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	for _, tc := range []struct {
		name  string
		ehlo  bool
		steps []string
	}{
		{"AUTH before EHLO", false, []string{"C: AUTH PLAIN " + plainIR("", "alice", w.passcode), "S: 503 5.5.1 Send EHLO first"}},
		{"EHLO without a name", false, []string{"C: EHLO", "S: 501 5.5.4 Syntax: EHLO hostname"}},
		{"MAIL before AUTH", true, []string{"C: MAIL FROM:<alice@example.org>", "S: " + smtpAuthNeeded}},
		{"RCPT before AUTH", true, []string{"C: RCPT TO:<bob@example.org>", "S: " + smtpAuthNeeded}},
		{"DATA before AUTH", true, []string{"C: DATA", "S: " + smtpAuthNeeded}},
		{"BDAT before AUTH: its chunk is discarded", true, []string{"C: BDAT 12 LAST\r\nQUIT\r\nQUIT", "S: " + smtpAuthNeeded}},
		{"unknown command", true, []string{"C: FROB", "S: 500 5.5.2 Command not recognized"}},
		{"AUTH without mechanism", true, []string{"C: AUTH", "S: 501 5.5.4 Syntax: AUTH mechanism [initial-response]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSMTP(t, w.k.SubmissionPlain)
			if tc.ehlo {
				c.ehlo("client.example.org")
			}
			c.run(tc.steps...)
			c.run("C: NOOP", "S: "+smtpOK)
		})
	}
	if n := w.be.auths.Load(); n != 0 {
		t.Errorf("backend asked to authenticate %d times", n)
	}
}

// A command line may have 512 octets with its CRLF (RFC 5321 §4.5.3.1.4),
// an AUTH line or SASL response 12288; a line over 12288 ends the session,
// read no further than the limit.
func TestSMTPLineLimits(t *testing.T) {
	w := newSMTPWorld(t, worldOptions{})
	t.Run("512 octets", func(t *testing.T) {
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.run("C: NOOP "+strings.Repeat("x", 512-len("NOOP \r\n")), "S: "+smtpOK)
	})
	t.Run("513 octets", func(t *testing.T) {
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.run("C: NOOP "+strings.Repeat("x", 513-len("NOOP \r\n")), "S: 500 5.5.2 Line too long", "C: NOOP", "S: "+smtpOK)
	})
	t.Run("1 MB line without CRLF", func(t *testing.T) {
		c := dialSMTP(t, w.k.SubmissionPlain)
		// Written concurrently: kanmon stops reading at the limit, so
		// the write may block or fail.
		go func() {
			_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.conn.Write([]byte(strings.Repeat("x", 1<<20)))
		}()
		c.run("S: 500 5.5.2 Line too long", "EOF")
	})
	t.Run("SASL response over 12288 octets", func(t *testing.T) {
		c := dialSMTP(t, w.k.SubmissionPlain)
		c.ehlo("client.example.org")
		c.run("C: AUTH PLAIN", "S: 334 ")
		go func() {
			_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.conn.Write([]byte(strings.Repeat("QUFB", 4<<10) + "\r\n"))
		}()
		c.run("S: 500 5.5.6 Authentication Exchange line is too long", "EOF")
	})
}
