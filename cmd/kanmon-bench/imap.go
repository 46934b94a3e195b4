//go:build unix

package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// target is one IMAP endpoint: Dovecot direct or kanmon, plain or TLS.
type target struct {
	name string
	addr string
	tls  *tls.Config // nil: plaintext
}

// ioTimeout bounds every single exchange of the load clients.
const ioTimeout = 30 * time.Second

// imapConn is a minimal IMAP client connection: enough for LOGIN, SELECT,
// FETCH, IDLE, NOOP and LOGOUT.
type imapConn struct {
	c    net.Conn
	br   *bufio.Reader
	user string // who logged in, for openIdle's sessions
}

// dialIMAP connects (with the TLS handshake when t.tls is set) and reads
// the greeting.
func dialIMAP(t target) (*imapConn, error) {
	d := net.Dialer{Timeout: ioTimeout}
	c, err := d.Dial("tcp", t.addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if t.tls != nil {
		tc := tls.Client(c, t.tls)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		c = tc
	}
	ic := &imapConn{c: c, br: bufio.NewReaderSize(c, 4096)}
	g, err := ic.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(g, "* OK") {
		c.Close()
		return nil, fmt.Errorf("greeting %q: %v", g, err)
	}
	return ic, nil
}

// cmd sends "tag text" and reads up to the tagged reply, which must be OK.
func (ic *imapConn) cmd(tag, text string) (string, error) {
	_ = ic.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(ic.c, tag+" "+text+"\r\n"); err != nil {
		return "", err
	}
	for {
		l, err := ic.br.ReadString('\n')
		if err != nil {
			return l, err
		}
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				return l, fmt.Errorf("%s: %q", strings.Fields(text)[0], strings.TrimSpace(l))
			}
			return l, nil
		}
	}
}

func (ic *imapConn) login(user, secret string) error {
	_, err := ic.cmd("a", fmt.Sprintf("LOGIN %s %q", user, secret))
	return err
}

// logout sends LOGOUT and waits for the server to close.
func (ic *imapConn) logout() error {
	_, err := ic.cmd("z", "LOGOUT")
	if err == nil {
		_, _ = ic.br.ReadByte() // EOF once the server closed
	}
	ic.c.Close()
	return err
}

// loginCycle is one connect, LOGIN, LOGOUT.
func loginCycle(t target, user, secret string) error {
	ic, err := dialIMAP(t)
	if err != nil {
		return err
	}
	if err := ic.login(user, secret); err != nil {
		ic.c.Close()
		return err
	}
	return ic.logout()
}

// fetchAll logs in, selects INBOX and fetches every message's BODY.PEEK[].
// It returns the bytes received for the FETCH (responses and literals)
// and the time from sending FETCH to its tagged OK.
func fetchAll(t target, user, secret string) (int64, time.Duration, error) {
	ic, err := dialIMAP(t)
	if err != nil {
		return 0, 0, err
	}
	defer ic.c.Close()
	if err := ic.login(user, secret); err != nil {
		return 0, 0, err
	}
	if _, err := ic.cmd("s", "SELECT INBOX"); err != nil {
		return 0, 0, err
	}
	// The messages are ours and hold only header lines and runs of 'x':
	// the tagged line is the first place "\r\nFZ9 " can occur.
	const tag = "FZ9"
	_ = ic.c.SetDeadline(time.Now().Add(5 * time.Minute))
	start := time.Now()
	if _, err := io.WriteString(ic.c, tag+" FETCH 1:* BODY.PEEK[]\r\n"); err != nil {
		return 0, 0, err
	}
	buf := make([]byte, 256<<10)
	var total int64
	var tail []byte
	marker := []byte("\r\n" + tag + " ")
	for {
		n, err := ic.br.Read(buf)
		total += int64(n)
		if n > 0 {
			tail = append(tail, buf[:n]...)
			if i := bytes.Index(tail, marker); i >= 0 {
				rest := tail[i+2:]
				if j := bytes.IndexByte(rest, '\n'); j >= 0 {
					took := time.Since(start)
					if !bytes.HasPrefix(rest, []byte(tag+" OK")) {
						return total, took, fmt.Errorf("FETCH: %q", bytes.TrimSpace(rest[:j]))
					}
					_ = ic.logout()
					return total, took, nil
				}
			}
			if len(tail) > 64 {
				tail = append(tail[:0], tail[len(tail)-64:]...)
			}
		}
		if err != nil {
			return total, time.Since(start), fmt.Errorf("FETCH read after %d bytes: %w", total, err)
		}
	}
}

// openIdle logs in, selects INBOX and starts IDLE; the connection is left
// idling.
func openIdle(t target, user, secret string) (*imapConn, error) {
	ic, err := dialIMAP(t)
	if err != nil {
		return nil, err
	}
	if err := ic.login(user, secret); err != nil {
		ic.c.Close()
		return nil, err
	}
	if _, err := ic.cmd("s", "SELECT INBOX"); err != nil {
		ic.c.Close()
		return nil, err
	}
	_ = ic.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(ic.c, "i IDLE\r\n"); err != nil {
		ic.c.Close()
		return nil, err
	}
	l, err := ic.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "+") {
		ic.c.Close()
		return nil, fmt.Errorf("IDLE: %q %v", l, err)
	}
	_ = ic.c.SetDeadline(time.Time{})
	ic.user = user
	return ic, nil
}

// stillIdle ends IDLE with DONE and checks the tagged OK, then sends a
// NOOP: the session is alive end to end.
func (ic *imapConn) stillIdle() error {
	_ = ic.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(ic.c, "DONE\r\n"); err != nil {
		return err
	}
	for {
		l, err := ic.br.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(l, "i ") {
			if !strings.HasPrefix(l, "i OK") {
				return errors.New("IDLE ended: " + strings.TrimSpace(l))
			}
			break
		}
		if strings.HasPrefix(l, "* BYE") {
			return errors.New(strings.TrimSpace(l))
		}
	}
	_, err := ic.cmd("n", "NOOP")
	return err
}
