package proxy_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/auth"
)

// expectLoggedIn reads the tagged OK of a login: it must carry the
// backend's capabilities (memimap offers IDLE; kanmon's pre-auth list has
// no IDLE and has AUTH=), and a SELECT must then reach the backend.
func expectLoggedIn(t *testing.T, c *conv, tag string) {
	t.Helper()
	line := c.expect(0, tag+" OK [CAPABILITY ...", false)
	caps, _, _ := strings.Cut(strings.TrimPrefix(line, tag+" OK [CAPABILITY "), "]")
	if !hasCap(caps, "IDLE") || hasCap(caps, "AUTH=LOGIN") {
		t.Fatalf("login OK does not carry the backend's capabilities: %q", line)
	}
	c.run(
		"C: s1 SELECT INBOX",
		"S*: s1 OK [READ-WRITE] ...",
	)
}

func hasCap(list, c string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, c) {
			return true
		}
	}
	return false
}

// Every way of presenting alice's passcode logs her in.
func TestIMAPLoginWithPasscode(t *testing.T) {
	w := newWorld(t, worldOptions{})
	pc := w.passcode
	spaced := auth.FormatPasscode(pc) // "ABCD EFGH IJKL MNOP", 19 bytes
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"LOGIN quoted with spaces", []string{`C: a1 LOGIN "alice" "` + spaced + `"`}},
		{"LOGIN atom", []string{"C: a1 LOGIN alice " + pc}},
		{"LOGIN lower case", []string{"C: a1 LOGIN alice " + strings.ToLower(pc)}},
		{"LOGIN user in another case", []string{"C: a1 LOGIN ALICE " + pc}},
		{"LOGIN literal {16}", []string{
			"C: a1 LOGIN alice {16}",
			"S: + Ready for literal data",
			"C: " + pc,
		}},
		{"LOGIN literal {19+}", []string{
			"C: a1 LOGIN {5+}",
			"C: alice {19+}",
			"C: " + spaced,
		}},
		{"AUTHENTICATE PLAIN SASL-IR", []string{
			"C: a1 AUTHENTICATE PLAIN " + plainIR("", "alice", pc),
		}},
		{"AUTHENTICATE PLAIN authzid = authcid", []string{
			"C: a1 authenticate plain " + plainIR("alice", "alice", spaced),
		}},
		{"AUTHENTICATE PLAIN continuation", []string{
			"C: a1 AUTHENTICATE PLAIN",
			"S: + ",
			"C: " + plainIR("", "alice", pc),
		}},
		{"AUTHENTICATE LOGIN", []string{
			"C: a1 AUTHENTICATE LOGIN",
			"S: + VXNlcm5hbWU6",
			"C: " + b64("alice"),
			"S: + UGFzc3dvcmQ6",
			"C: " + b64(pc),
		}},
		{"AUTHENTICATE LOGIN initial response", []string{
			"C: a1 AUTHENTICATE LOGIN " + b64("alice"),
			"S: + UGFzc3dvcmQ6",
			"C: " + b64(spaced),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, w.k.IMAPPlain)
			c.run("S: * OK [CAPABILITY ...")
			c.run(tc.steps...)
			expectLoggedIn(t, c, "a1")
		})
	}
	t.Run("implicit TLS", func(t *testing.T) {
		c := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
		c.run("S: * OK [CAPABILITY ...", "C: a1 LOGIN alice "+pc)
		expectLoggedIn(t, c, "a1")
	})
	log := w.k.Logs()
	if !strings.Contains(log, "via=passcode app="+app) {
		t.Errorf("log does not record the passcode logins:\n%s", log)
	}
	noLeak(t, log, pc, spaced, strings.ToLower(pc), masterPW, b64(pc), plainIR("", "alice", pc))
}

// carol has no 2FA: from a trusted network her own password goes through
// and the backend's answer stands.
func TestIMAPPassthrough(t *testing.T) {
	w := newWorld(t, worldOptions{})
	t.Run("LOGIN", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		c.run("S: * OK [CAPABILITY ...", `C: a1 LOGIN carol "`+carolPW+`"`)
		expectLoggedIn(t, c, "a1")
	})
	t.Run("AUTHENTICATE PLAIN", func(t *testing.T) {
		c := dialTLS(t, w.k.IMAPS, w.k.ClientTLS)
		c.run("S: * OK [CAPABILITY ...", "C: a1 AUTHENTICATE PLAIN "+plainIR("", "carol", carolPW))
		expectLoggedIn(t, c, "a1")
	})
	t.Run("wrong password", func(t *testing.T) {
		c := dial(t, w.k.IMAPPlain)
		c.run(
			"S: * OK [CAPABILITY ...",
			`C: a1 LOGIN carol "not-her-password"`,
			"S: a1 "+failedReply,
		)
	})
	if w.backend.accepts.Load() != 3 {
		t.Errorf("backend contacted %d times, want 3", w.backend.accepts.Load())
	}
	log := w.k.Logs()
	if !strings.Contains(log, "user=carol via=passthrough") {
		t.Errorf("log does not record the passthrough login:\n%s", log)
	}
	noLeak(t, log, carolPW, "not-her-password", masterPW)
}

// A command pipelined right behind LOGIN is buffered in the front's
// reader; it must be handed to the relay and reach the backend.
func TestIMAPPipelinedAfterLogin(t *testing.T) {
	w := newWorld(t, worldOptions{})
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) *conv
	}{
		{"plain", func(t *testing.T) *conv { return dial(t, w.k.IMAPPlain) }},
		{"implicit TLS", func(t *testing.T) *conv { return dialTLS(t, w.k.IMAPS, w.k.ClientTLS) }},
		{"after STARTTLS", func(t *testing.T) *conv {
			c := dial(t, w.k.IMAPStartTLS)
			c.run("S: * OK [CAPABILITY ...", "C: s STARTTLS", "S: s OK ...")
			c.startTLS(w.k.ClientTLS)
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.dial(t)
			if tc.name != "after STARTTLS" {
				c.run("S: * OK [CAPABILITY ...")
			}
			c.write("a1 LOGIN alice " + w.passcode + "\r\na2 SELECT INBOX\r\na3 LOGOUT\r\n")
			c.run(
				"S: a1 OK [CAPABILITY ...",
				"S*: a2 OK [READ-WRITE] ...",
				"S*: a3 OK ...",
				"EOF",
			)
		})
	}
}

// A reload takes a revoked passcode away and puts a new one in force.
func TestIMAPReloadPasscodes(t *testing.T) {
	w := newWorld(t, worldOptions{})
	login := func(t *testing.T, secret, want string) {
		t.Helper()
		c := dial(t, w.k.IMAPPlain)
		c.run("S: * OK [CAPABILITY ...", "C: a1 LOGIN alice "+secret, "S: a1 "+want)
	}
	old := w.passcode
	login(t, old, "OK [CAPABILITY ...")

	store := auth.OpenStore(filepath.Join(w.k.Dir, "accounts.toml"))
	if _, _, err := auth.RevokePasscode(store, "alice", app); err != nil {
		t.Fatal(err)
	}
	fresh := w.k.AddPasscode(t, "alice", "iPhone")
	// Not in force until the reload.
	login(t, old, "OK [CAPABILITY ...")
	login(t, fresh, failedReply)

	w.k.Reload(t)
	login(t, old, failedReply)
	login(t, fresh, "OK [CAPABILITY ...")
	if log := w.k.Logs(); !strings.Contains(log, "app=iPhone") {
		t.Errorf("log does not name the new passcode's app:\n%s", log)
	}
}
