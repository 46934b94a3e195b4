package proxy

import (
	"context"
	"encoding/base64"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/kanmon-mail/kanmon/config"
)

// SubmissionLogin is a logged-in backend SMTP connection ready to relay.
type SubmissionLogin struct {
	Endpoint
	// Extensions are the backend's EHLO lines after its name line
	// (keyword and parameters, "SIZE 10240000"), as offered before AUTH
	// and after STARTTLS when that is configured.
	Extensions []string
}

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

// LoginSubmission dials the submission backend and authenticates with
// AUTH PLAIN (RFC 4954, RFC 4616) after EHLO helo (and STARTTLS, when
// configured), telling the backend who the client is as forward_client_ip
// says (a PROXY header, or XCLIENT). helo is the client's EHLO name, or
// kanmon's own when empty. Only a 535 is a definite authentication
// failure.
func (b *Backend) LoginSubmission(ctx context.Context, cred Credentials, helo string) (*SubmissionLogin, error) {
	if helo == "" {
		helo = smtpHostname()
	}
	var exts []string
	bc, err := b.smtpConnect(ctx, cred.Client, func(bc *backendConn) error {
		var err error
		if exts, err = b.smtpHello(ctx, bc, helo); err != nil {
			return err
		}
		if b.forwardMode() == config.ForwardXCLIENT {
			if exts, err = smtpSendXCLIENT(bc, exts, cred.Client, helo); err != nil {
				return err
			}
		}
		return smtpAuthPlain(bc, cred)
	})
	if err != nil {
		return nil, err
	}
	b.smtpExtCache().store(exts, smtpExtensionsTTL)
	return &SubmissionLogin{Endpoint: bc.handOver(), Extensions: exts}, nil
}

// smtpConnect dials the backend for client and runs step on the
// connection; shutdown (ctx) cuts it short rather than waiting out the
// timeout. On error the connection is closed.
func (b *Backend) smtpConnect(ctx context.Context, client ClientInfo, step func(*backendConn) error) (*backendConn, error) {
	bc, err := b.dialClient(ctx, client)
	if err != nil {
		return nil, err
	}
	raw := bc.conn
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	defer stop()
	if err := step(bc); err != nil {
		bc.conn.Close()
		return nil, err
	}
	return bc, nil
}

// smtpHello reads the greeting, says EHLO, and with tls = starttls
// upgrades the connection and says EHLO again, since what the server said
// before TLS no longer holds (RFC 3207 §4.2). It returns the extensions.
func (b *Backend) smtpHello(ctx context.Context, bc *backendConn, helo string) ([]string, error) {
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
		return nil, unavailable("backend STARTTLS", err)
	}
	if code != 220 {
		return nil, unavailable(fmt.Sprintf("backend refused STARTTLS: %d %.120q", code, texts[0]), nil)
	}
	if err := b.startTLS(ctx, bc); err != nil {
		return nil, err
	}
	return smtpEHLO(bc, helo)
}

// smtpEHLO says EHLO and returns the extension lines of the 250 reply.
func smtpEHLO(bc *backendConn, helo string) ([]string, error) {
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
func smtpSendXCLIENT(bc *backendConn, exts []string, c ClientInfo, helo string) ([]string, error) {
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
func smtpAuthPlain(bc *backendConn, cred Credentials) error {
	ir := base64.StdEncoding.EncodeToString([]byte(cred.Authzid + "\x00" + cred.Authcid + "\x00" + cred.Password))
	var (
		code  int
		texts []string
		err   error
	)
	if cmd := "AUTH PLAIN " + ir; len(cmd)+len("\r\n") <= smtpMaxCommandLine {
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
		return &LoginError{AuthFailed: true, Detail: detail}
	}
	// 454 and other 4xx are temporary; 534 and 538 are the backend's
	// setup; a 334 after an initial response is a protocol error.
	return unavailable(detail, nil)
}

// smtpCommand sends one line and reads the reply.
func smtpCommand(bc *backendConn, line string) (int, []string, error) {
	if err := bc.writeLine(line); err != nil {
		return 0, nil, err
	}
	return readSMTPReply(bc)
}

// readSMTPReply reads one reply, all its lines (RFC 5321 §4.2.1): "250-"
// goes on, "250 " ends it. It returns the code and each line's text; the
// texts are never empty.
func readSMTPReply(bc *backendConn) (int, []string, error) {
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
	bc, err := b.smtpConnect(ctx, ClientInfo{}, func(bc *backendConn) error {
		var err error
		exts, err = b.smtpHello(ctx, bc, smtpHostname())
		return err
	})
	if err != nil {
		return nil, err
	}
	_, _, _ = smtpCommand(bc, "QUIT")
	bc.conn.Close()
	return exts, nil
}

// submissionExtensions returns the backend's EHLO extensions: the cached
// list while it is fresh, else a new probe's. When the probe fails it
// returns the last known list, or smtpFallbackExtensions, and the error
// for the log. One probe runs at a time; concurrent callers wait for it.
func (b *Backend) submissionExtensions(ctx context.Context) ([]string, error) {
	c := b.smtpExtCache()
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

// smtpExtCache is one backend's EHLO extension list and when it expires.
type smtpExtCache struct {
	mu      sync.Mutex
	exts    []string
	expires time.Time
}

// store replaces the list, fresh for ttl.
func (c *smtpExtCache) store(exts []string, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exts, c.expires = exts, time.Now().Add(ttl)
}

// smtpExtCaches holds one smtpExtCache per Backend, keyed weakly: a
// reload builds new Backends, which start afresh, and an old Backend's
// cache goes when the Backend does. (A field of Backend would do the
// same more simply; Backend lives in backend.go.)
var smtpExtCaches sync.Map // weak.Pointer[Backend] → *smtpExtCache

// smtpExtCache returns b's extension cache, creating it on first use.
func (b *Backend) smtpExtCache() *smtpExtCache {
	key := weak.Make(b)
	if c, ok := smtpExtCaches.Load(key); ok {
		return c.(*smtpExtCache)
	}
	c, loaded := smtpExtCaches.LoadOrStore(key, &smtpExtCache{})
	if !loaded {
		runtime.AddCleanup(b, func(k weak.Pointer[Backend]) { smtpExtCaches.Delete(k) }, key)
	}
	return c.(*smtpExtCache)
}
