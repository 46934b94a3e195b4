package proxy_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// secretForms are the ways a secret may show up in a log: as typed, in
// either case, grouped in fours as a passcode is shown, and in base64 as
// SASL carries it.
func secretForms(secrets ...string) []string {
	var out []string
	for _, s := range secrets {
		plain := strings.ReplaceAll(s, " ", "")
		forms := []string{s, plain, strings.ToLower(plain), strings.ToUpper(plain), b64(s), b64(plain)}
		if len(plain) == 16 {
			grouped := plain[:4] + " " + plain[4:8] + " " + plain[8:12] + " " + plain[12:]
			forms = append(forms, grouped, strings.ToLower(grouped))
		}
		out = append(out, forms...)
	}
	return out
}

// No secret in any log line, whatever the login: kanmon (at debug level)
// runs logins of every kind, good and bad, over IMAP, POP3 and SMTP, and
// then its log and a metrics scrape are searched for every secret used,
// in every form.
func TestNoSecretInLogs(t *testing.T) {
	w := newCapsWorld(t, "")
	pc := w.passcode
	grouped := strings.ToLower(pc[:4] + " " + pc[4:8] + " " + pc[8:12] + " " + pc[12:])
	const wrongPasscode = "QWERTYUIOPASDFGH"
	blobs := []string{
		"\x00alice\x00" + pc, "alice\x00alice\x00" + grouped, "\x00alice\x00" + wrongPasscode,
		"\x00carol\x00" + carolPW, "\x00carol\x00carol-typo-Q9",
	}

	imap := func(steps ...string) {
		c := dial(t, w.k.IMAPPlain)
		c.run(append([]string{"S: " + capIMAPGreeting}, steps...)...)
		c.conn.Close()
	}
	imap("C: a LOGIN alice "+pc, "S: a OK ...")
	imap(`C: a LOGIN alice "`+grouped+`"`, "S: a OK ...")
	imap("C: a LOGIN alice "+wrongPasscode, "S: a "+failedReply)
	imap("C: a LOGIN alice "+alicePW, "S: a "+failedReply)
	imap("C: a LOGIN carol "+carolPW, "S: a OK ...")
	imap("C: a LOGIN carol carol-typo-Q9", "S: a "+failedReply)
	imap("C: a AUTHENTICATE PLAIN "+b64(blobs[0]), "S: a OK ...")
	imap("C: a AUTHENTICATE PLAIN", "S: + ", "C: "+b64(blobs[1]), "S: a OK ...")
	imap("C: a AUTHENTICATE PLAIN "+b64(blobs[2]), "S: a "+failedReply)
	imap("C: a AUTHENTICATE PLAIN "+b64(blobs[3]), "S: a OK ...")
	imap("C: a AUTHENTICATE PLAIN "+b64(blobs[4]), "S: a "+failedReply)
	imap("C: a AUTHENTICATE LOGIN", "S: + ...", "C: "+b64("alice"), "S: + ...", "C: "+b64(pc), "S: a OK ...")
	imap("C: a AUTHENTICATE LOGIN", "S: + ...", "C: "+b64("carol"), "S: + ...", "C: "+b64(carolPW), "S: a OK ...")

	pop3 := func(steps ...string) {
		c := dial(t, w.k.POP3Plain)
		c.run(append([]string{"S: " + pop3Greeting}, steps...)...)
		c.conn.Close()
	}
	pop3("C: USER alice", "S: +OK ...", "C: PASS "+grouped, "S: +OK Logged in.")
	pop3("C: USER alice", "S: +OK ...", "C: PASS "+alicePW, "S: "+pop3Failed)
	pop3("C: USER carol", "S: +OK ...", "C: PASS "+carolPW, "S: +OK Logged in.")
	pop3("C: AUTH PLAIN "+b64(blobs[0]), "S: +OK Logged in.")
	pop3("C: AUTH LOGIN", "S: + ...", "C: "+b64("carol"), "S: + ...", "C: "+b64("carol-typo-Q9"), "S: "+pop3Failed)

	// SMTP: the backend is down, so the logins end at the backend dial,
	// after the policy has seen the secret.
	smtp := dial(t, w.k.SubmissionPlain)
	smtp.run("S: 220 ...", "C: EHLO client.example")
	for l := smtp.line(); !strings.HasPrefix(l, "250 "); l = smtp.line() {
	}
	smtp.run("C: AUTH PLAIN "+b64(blobs[0]), "S: 454 ...", "C: AUTH PLAIN "+b64(blobs[2]), "S: 535 ...")
	smtp.conn.Close()

	w.k.Stop()
	logs := w.k.Logs()
	if !strings.Contains(logs, `msg="login failed"`) || strings.Count(logs, "msg=login ") < 10 {
		t.Fatalf("the logins did not all happen:\n%s", logs)
	}
	secrets := secretForms(pc, grouped, wrongPasscode, alicePW, carolPW, "carol-typo-Q9", masterPW)
	for _, blob := range blobs {
		secrets = append(secrets, b64(blob))
	}
	noLeak(t, logs, secrets...)
	hs := httptest.NewServer(w.k.Metrics.Handler())
	defer hs.Close()
	resp, err := hs.Client().Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	noLeak(t, string(body), secrets...)
}
