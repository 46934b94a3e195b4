package backend

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/lineio"
)

// Limits and timing of the backend side.
const (
	// smtpMaxReplyLines bounds the lines of one backend reply; an EHLO
	// reply has one line per extension, a few dozen at most.
	smtpMaxReplyLines = 100
	// smtpExtensionsTTL is how long a backend's EHLO extension list is
	// reused before the next EHLO probes again. A successful login
	// refreshes it too.
	smtpExtensionsTTL = 5 * time.Minute
	// smtpProbeRetry is how long a failed probe's answer (the last known
	// or the fallback list) stands before the backend is probed again.
	smtpProbeRetry = 30 * time.Second
)

// smtpFallbackExtensions are advertised when the backend has never
// answered a probe: nothing that changes what a client sends in a
// transaction, which a backend might not understand.
var smtpFallbackExtensions = []string{"PIPELINING", "ENHANCEDSTATUSCODES"}

// loginSubmission authenticates with AUTH PLAIN (RFC 4954, RFC 4616)
// after EHLO (and STARTTLS, when configured), telling the backend who the
// client is as forward_client_ip says (XCLIENT here; a PROXY header was
// sent by dial). The EHLO name is the client's (ClientInfo.Helo), or
// kanmon's own. Only a 535 is a definite authentication failure. A
// successful login refreshes the cached extensions.
func (b *Backend) loginSubmission(ctx context.Context, bc *conn, cred Credentials) (*Login, error) {
	helo := cred.Client.Helo
	if !ValidHeloName(helo) {
		helo = Hostname()
	}
	exts, err := b.smtpHello(ctx, bc, helo)
	if err != nil {
		return nil, err
	}
	if b.forwardMode() == config.ForwardXCLIENT {
		if exts, err = smtpSendXCLIENT(bc, exts, cred.Client, helo); err != nil {
			return nil, err
		}
	}
	if err := smtpAuthPlain(bc, cred); err != nil {
		return nil, err
	}
	b.extensions.store(exts, smtpExtensionsTTL)
	return &Login{Extensions: exts}, nil
}

// smtpHello reads the greeting, says EHLO, and with tls = starttls
// upgrades the connection and says EHLO again, since what the server said
// before TLS no longer holds (RFC 3207 §4.2). It returns the extensions.
func (b *Backend) smtpHello(ctx context.Context, bc *conn, helo string) ([]string, error) {
	code, texts, err := readSMTPReply(bc)
	if err != nil {
		return nil, unavailable("reading backend greeting", err)
	}
	if code != 220 {
		return nil, unavailable(fmt.Sprintf("backend greeting is not 220: %d %.80q", code, texts[0]), nil)
	}
	exts, err := smtpEHLO(bc, helo)
	if err != nil || b.TLSMode != config.TLSStartTLS {
		return exts, err
	}
	code, texts, err = smtpCommand(bc, "STARTTLS")
	if err != nil {
		return nil, tlsFailed("backend STARTTLS", err)
	}
	if code != 220 {
		return nil, tlsFailed(fmt.Sprintf("backend refused STARTTLS: %d %.120q", code, texts[0]), nil)
	}
	if err := b.startTLS(ctx, bc); err != nil {
		return nil, err
	}
	return smtpEHLO(bc, helo)
}

// smtpEHLO says EHLO and returns the extension lines of the 250 reply.
func smtpEHLO(bc *conn, helo string) ([]string, error) {
	code, texts, err := smtpCommand(bc, "EHLO "+helo)
	if err != nil {
		return nil, unavailable("backend EHLO", err)
	}
	if code != 250 {
		return nil, unavailable(fmt.Sprintf("backend refused EHLO: %d %.120q", code, texts[0]), nil)
	}
	return texts[1:], nil
}

// smtpSendXCLIENT tells the backend who the client is with XCLIENT
// (Postfix's XCLIENT extension, which Dovecot's submission-login takes
// from its login_trusted_networks), sending only the attributes the
// backend's EHLO lists; the IPv6 form is "IPV6:addr", which both take.
// The server then starts afresh with a 220, so EHLO is said again and its
// extensions returned. A backend that does not offer XCLIENT to kanmon
// or refuses it fails the login: forwarding was asked for.
func smtpSendXCLIENT(bc *conn, exts []string, c ClientInfo, helo string) ([]string, error) {
	cmd := xclientCommand(c, true)
	if cmd == "" {
		return exts, nil
	}
	offered := ""
	for _, e := range exts {
		if kw, params, _ := strings.Cut(e, " "); strings.EqualFold(kw, "XCLIENT") {
			offered = params
		}
	}
	if cmd = smtpXCLIENTAttrs(cmd, offered); cmd == "" {
		return nil, unavailable(`backend does not offer XCLIENT with ADDR to kanmon (forward_client_ip = "xclient"): is kanmon among its trusted hosts?`, nil)
	}
	code, texts, err := smtpCommand(bc, cmd)
	if err != nil {
		return nil, unavailable("backend XCLIENT", err)
	}
	if code/100 != 2 {
		return nil, unavailable(fmt.Sprintf(`backend refused XCLIENT (forward_client_ip = "xclient"): %d %.120q`, code, texts[0]), nil)
	}
	return smtpEHLO(bc, helo)
}

// smtpXCLIENTAttrs keeps the attributes of an XCLIENT command that the
// space-separated list offered names; "" when ADDR is not among them.
func smtpXCLIENTAttrs(cmd, offered string) string {
	if !hasCapability(offered, "ADDR") {
		return ""
	}
	kept := []string{"XCLIENT"}
	for _, a := range strings.Fields(cmd)[1:] {
		if name, _, _ := strings.Cut(a, "="); hasCapability(offered, name) {
			kept = append(kept, a)
		}
	}
	return strings.Join(kept, " ")
}

// smtpAuthPlain sends AUTH PLAIN, with the response as an initial
// response when the command fits in a command line (RFC 4954 §4 forbids
// a longer one); else the response follows the 334.
func smtpAuthPlain(bc *conn, cred Credentials) error {
	ir := base64.StdEncoding.EncodeToString([]byte(cred.Authzid + "\x00" + cred.Authcid + "\x00" + cred.Password))
	var (
		code  int
		texts []string
		err   error
	)
	if cmd := "AUTH PLAIN " + ir; len(cmd)+len("\r\n") <= lineio.SMTPMaxCommandLine {
		code, texts, err = smtpCommand(bc, cmd)
	} else {
		code, texts, err = smtpCommand(bc, "AUTH PLAIN")
		if err == nil && code == 334 {
			code, texts, err = smtpCommand(bc, ir)
		}
	}
	if err != nil {
		return unavailable("backend AUTH", err)
	}
	detail := fmt.Sprintf("backend replied %d %.160q", code, texts[0])
	switch code {
	case 235:
		return nil
	case 535: // RFC 4954 §6: credentials invalid
		return rejected(detail)
	}
	// 454 and other 4xx are temporary; 534 and 538 are the backend's
	// setup; a 334 after an initial response is a protocol error.
	return unavailable(detail, nil)
}

// smtpCommand sends one line and reads the reply.
func smtpCommand(bc *conn, line string) (int, []string, error) {
	if err := bc.writeLine(line); err != nil {
		return 0, nil, err
	}
	return readSMTPReply(bc)
}

// readSMTPReply reads one reply, all its lines (RFC 5321 §4.2.1): "250-"
// goes on, "250 " ends it. It returns the code and each line's text; the
// texts are never empty.
func readSMTPReply(bc *conn) (int, []string, error) {
	var texts []string
	code := 0
	for {
		line, err := bc.readLine()
		if err != nil {
			return 0, nil, err
		}
		if len(line) < 3 || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return 0, nil, fmt.Errorf("malformed reply line %.80q", line)
		}
		c, err := strconv.Atoi(line[:3])
		if err != nil || c < 200 || c > 599 || code != 0 && c != code {
			return 0, nil, fmt.Errorf("malformed reply line %.80q", line)
		}
		code = c
		if len(texts) == smtpMaxReplyLines {
			return 0, nil, fmt.Errorf("reply longer than %d lines", smtpMaxReplyLines)
		}
		if len(line) <= 4 {
			texts = append(texts, "")
		} else {
			texts = append(texts, line[4:])
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, texts, nil
		}
	}
}

// probeSubmission asks the backend for its extensions without logging in:
// greeting, EHLO (STARTTLS and EHLO again when configured), QUIT.
func (b *Backend) probeSubmission(ctx context.Context) ([]string, error) {
	var exts []string
	bc, err := b.converse(ctx, ClientInfo{}, func(bc *conn) error {
		var err error
		exts, err = b.smtpHello(ctx, bc, Hostname())
		return err
	})
	if err != nil {
		return nil, err
	}
	_, _, _ = smtpCommand(bc, "QUIT")
	bc.conn.Close()
	return exts, nil
}

// SubmissionExtensions returns the submission backend's EHLO extensions,
// for the front's EHLO reply: the cached list while it is fresh, else a
// new probe's. When the probe fails it returns the last known list, or a
// minimal safe one, and the error for the log. One probe runs at a time;
// concurrent callers wait for it. A reload builds new Backends, whose
// caches start afresh. A nil Backend has only the minimal list.
func (b *Backend) SubmissionExtensions(ctx context.Context) ([]string, error) {
	if b == nil {
		return smtpFallbackExtensions, nil
	}
	c := &b.extensions
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().Before(c.expires) {
		return c.exts, nil
	}
	exts, err := b.probeSubmission(ctx)
	if err != nil {
		if c.exts == nil {
			c.exts = smtpFallbackExtensions
		}
		c.expires = time.Now().Add(smtpProbeRetry)
		return c.exts, err
	}
	c.exts, c.expires = exts, time.Now().Add(smtpExtensionsTTL)
	return exts, nil
}

// extensionCache is one backend's EHLO extension list and when it
// expires.
type extensionCache struct {
	mu      sync.Mutex
	exts    []string
	expires time.Time
}

// store replaces the list, fresh for ttl.
func (c *extensionCache) store(exts []string, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exts, c.expires = exts, time.Now().Add(ttl)
}

// Hostname is kanmon's name in the SMTP greeting, its EHLO reply and,
// when the client's name will not do, its EHLO to the backend: the host
// name, or "localhost" when that is not a valid domain.
var Hostname = sync.OnceValue(func() string {
	h, err := os.Hostname()
	if err != nil || !ValidHeloName(h) || strings.HasPrefix(h, "[") {
		return "localhost"
	}
	return h
})

// ValidHeloName reports whether name may stand in an EHLO or HELO: a
// domain (letters, digits, hyphens and dots) or an address literal
// ("[192.0.2.1]", "[IPv6:2001:db8::1]"), RFC 5321 §4.1.3.
func ValidHeloName(name string) bool {
	if len(name) == 0 || len(name) > 255 {
		return false
	}
	allowed := "-."
	if lit, ok := strings.CutPrefix(name, "["); ok {
		inner, ok := strings.CutSuffix(lit, "]")
		if !ok || inner == "" {
			return false
		}
		name, allowed = inner, ":."
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(allowed, c) >= 0) {
			return false
		}
	}
	return true
}
