package proxy_test

// Helpers of the hardening tests (hardening_*_test.go): a backend fake
// for each protocol that records every byte kanmon sends it, per-backend
// config changes applied by a reload, and checks on the log's shape.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Protocols as the config names them.
const (
	protoIMAP = "imap"
	protoPOP3 = "pop3"
	protoSMTP = "submission"
)

var protocols = []string{protoIMAP, protoPOP3, protoSMTP}

// recordedPW is the only password the recording backend accepts.
const recordedPW = "recorded-pw-Vb83"

// tapeBackend is a backend for one protocol that writes down all
// that kanmon sends it (raw, every connection) and each PLAIN login it
// decodes. It offers SASL-IR and ID (IMAP) and XCLIENT (POP3, SMTP),
// accepts any user with recordedPW, and answers anything else after the
// login with OK.
type tapeBackend struct {
	proto string
	srv   *tcpServer

	mu     sync.Mutex
	raw    []byte
	logins [][]byte // decoded PLAIN responses
}

func startTapeBackend(t testing.TB, proto string) *tapeBackend {
	t.Helper()
	rb := &tapeBackend{proto: proto}
	rb.srv = startTCPServer(t, rb.serve)
	return rb
}

func (rb *tapeBackend) record(line string) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.raw = append(rb.raw, line...)
}

// login decodes a PLAIN response and reports whether it is accepted.
func (rb *tapeBackend) login(b64resp string) bool {
	resp, err := base64.StdEncoding.DecodeString(b64resp)
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if err != nil {
		rb.logins = append(rb.logins, []byte("INVALID BASE64: "+b64resp))
		return false
	}
	rb.logins = append(rb.logins, resp)
	f := bytes.Split(resp, []byte{0})
	return len(f) == 3 && string(f[2]) == recordedPW
}

// seen returns the raw bytes and the logins recorded so far.
func (rb *tapeBackend) seen() (string, [][]byte) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return string(rb.raw), append([][]byte(nil), rb.logins...)
}

func (rb *tapeBackend) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * ioTimeout))
	br := bufio.NewReader(c)
	send := func(s string) { _, _ = io.WriteString(c, s+"\r\n") }
	switch rb.proto {
	case protoIMAP:
		send("* OK [CAPABILITY IMAP4rev1 SASL-IR ID] recording")
	case protoPOP3:
		send("+OK recording")
	default:
		send("220 recording ESMTP")
	}
	for {
		raw, err := br.ReadString('\n')
		rb.record(raw)
		if err != nil {
			return
		}
		line := strings.TrimSuffix(raw, "\r\n")
		switch rb.proto {
		case protoIMAP:
			tag, rest, _ := strings.Cut(line, " ")
			cmd, arg, _ := strings.Cut(rest, " ")
			switch strings.ToUpper(cmd) {
			case "ID":
				send("* ID NIL\r\n" + tag + " OK ID completed.")
			case "AUTHENTICATE":
				ir := strings.TrimPrefix(arg, "PLAIN ")
				if rb.login(ir) {
					send(tag + " OK [CAPABILITY IMAP4rev1] Logged in")
				} else {
					send(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
				}
			case "LOGOUT":
				send("* BYE recording\r\n" + tag + " OK LOGOUT completed.")
				return
			default:
				send(tag + " OK done")
			}
		case protoPOP3:
			cmd, arg, _ := strings.Cut(line, " ")
			switch strings.ToUpper(cmd) {
			case "AUTH":
				if rb.login(strings.TrimPrefix(arg, "PLAIN ")) {
					send("+OK Logged in.")
				} else {
					send("-ERR [AUTH] Authentication failed.")
				}
			case "QUIT":
				send("+OK Logging out.")
				return
			default:
				send("+OK")
			}
		default:
			cmd, arg, _ := strings.Cut(line, " ")
			switch strings.ToUpper(cmd) {
			case "EHLO":
				send("250-recording\r\n250-XCLIENT ADDR PORT SESSION\r\n250 AUTH PLAIN")
			case "XCLIENT":
				send("220 recording ESMTP again")
			case "AUTH":
				if rb.login(strings.TrimPrefix(arg, "PLAIN ")) {
					send("235 2.7.0 Authentication successful")
				} else {
					send("535 5.7.8 Authentication credentials invalid")
				}
			case "QUIT":
				send("221 2.0.0 Bye")
				return
			default:
				send("250 2.0.0 OK")
			}
		}
	}
}

// kanmonFor starts kanmon with proto's backend at addr, the master
// credentials (the right password unless o has one) and alice on 2FA with
// a passcode (unless o says otherwise), then applies backendKeys to
// the [backend.proto] section with a reload: kanmontest has no option for
// every protocol's backend keys.
func kanmonFor(t testing.TB, proto, addr string, o kanmontest.Options, backendKeys ...string) *kanmontest.Kanmon {
	t.Helper()
	o.MasterUser = masterUser
	if o.MasterPassword == "" {
		o.MasterPassword = masterPW
	}
	if o.Passcodes == nil {
		o.Passcodes = map[string][]string{"alice": {app}}
	}
	switch proto {
	case protoIMAP:
		o.IMAPBackend = addr
	case protoPOP3:
		o.POP3Backend = addr
	default:
		o.SubmissionBackend = addr
	}
	k := kanmontest.Start(t, o)
	if len(backendKeys) > 0 {
		setBackendKeys(t, k, proto, backendKeys...)
	}
	return k
}

// setBackendKeys sets keys ("timeout = \"500ms\"") in the [backend.proto]
// section of k's config, replacing a key already there, and reloads.
func setBackendKeys(t testing.TB, k *kanmontest.Kanmon, proto string, keys ...string) {
	t.Helper()
	text, err := os.ReadFile(k.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	head := "[backend." + proto + "]\n"
	start := strings.Index(string(text), head)
	if start < 0 {
		t.Fatalf("no %s in the config", strings.TrimSpace(head))
	}
	start += len(head)
	end := strings.Index(string(text[start:]), "\n[")
	if end < 0 {
		end = len(text) - start
	}
	var section []string
	for _, l := range strings.Split(string(text[start:start+end]), "\n") {
		name, _, _ := strings.Cut(l, "=")
		replaced := false
		for _, k := range keys {
			kn, _, _ := strings.Cut(k, "=")
			if strings.TrimSpace(kn) == strings.TrimSpace(name) && strings.TrimSpace(name) != "" {
				replaced = true
			}
		}
		if !replaced {
			section = append(section, l)
		}
	}
	section = append(keys, section...)
	out := string(text[:start]) + strings.Join(section, "\n") + string(text[start+end:])
	if err := os.WriteFile(k.ConfigPath, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	k.Reload(t)
}

// listeners are k's three listeners of proto: implicit TLS, STARTTLS and
// plain.
func listeners(k *kanmontest.Kanmon, proto string) (implicit, starttls, plain string) {
	switch proto {
	case protoIMAP:
		return k.IMAPS, k.IMAPStartTLS, k.IMAPPlain
	case protoPOP3:
		return k.POP3S, k.POP3StartTLS, k.POP3Plain
	}
	return k.SubmissionS, k.SubmissionStartTLS, k.SubmissionPlain
}

// greeting is a transcript step that matches proto's greeting.
func greeting(proto string) string {
	switch proto {
	case protoIMAP:
		return "S: * OK [CAPABILITY ..."
	case protoPOP3:
		return "S: " + pop3Greeting
	}
	return smtpGreeting
}

// slogValue is how log/slog's text handler writes v as an attribute
// value: quoted and escaped when it must be.
func slogValue(v string) string {
	var b bytes.Buffer
	h := slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
			return slog.Attr{}
		}
		return a
	}})
	slog.New(h).Info("", "v", v)
	return strings.TrimSuffix(strings.TrimPrefix(b.String(), "v="), "\n")
}

// wantOneLinePerRecord fails unless every line of the log is one whole
// record: it starts with time= and holds a level and a message. A line
// break inside a value would start a line without them.
func wantOneLinePerRecord(t *testing.T, log string) {
	t.Helper()
	if log == "" {
		return
	}
	for i, l := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " level=") || !strings.Contains(l, " msg=") {
			t.Errorf("log line %d is not a whole record: %q", i+1, l)
		}
		if strings.ContainsAny(l, "\r\x00") {
			t.Errorf("log line %d holds a raw CR or NUL: %q", i+1, l)
		}
	}
}

// logSince returns the log written after the first n bytes.
func logSince(k *kanmontest.Kanmon, n int) string {
	l := k.Logs()
	if n > len(l) {
		return ""
	}
	return l[n:]
}

// waitLog waits until the log holds want, count times.
func waitLog(t *testing.T, k *kanmontest.Kanmon, want string, count int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for strings.Count(k.Logs(), want) < count {
		if time.Now().After(deadline) {
			t.Fatalf("the log holds %q %d times, want %d:\n%s", want, strings.Count(k.Logs(), want), count, k.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
