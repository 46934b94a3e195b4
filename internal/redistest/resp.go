//go:build unix

package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The package's own waiting and probing talk RESP2 over a fresh connection
// per command, so that no client library's pool, retries or background
// goroutines are involved while the servers come and go.

// respError is an error reply ("-ERR ...").
type respError string

func (e respError) Error() string { return string(e) }

// command dials addr, authenticates with password unless it is empty, runs
// one command and returns its reply: a string (simple or bulk), an int64, a
// []any, or nil for a null. An error reply is a respError.
func command(addr, password string, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	if password != "" {
		if err := writeCommand(c, "AUTH", password); err != nil {
			return nil, err
		}
		if _, err := readReply(r); err != nil {
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	if err := writeCommand(c, args...); err != nil {
		return nil, err
	}
	return readReply(r)
}

// writeCommand sends args as a RESP array of bulk strings.
func writeCommand(w io.Writer, args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, fmt.Errorf("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, respError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, fmt.Errorf("bad bulk length %q", body)
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, fmt.Errorf("bad array length %q", body)
		}
		if n < 0 {
			return nil, nil
		}
		a := make([]any, n)
		for i := range a {
			if a[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return a, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

// fields turns a flat [key value key value ...] reply, as SENTINEL MASTER
// gives, into a map of its string values.
func fields(reply any) map[string]string {
	a, _ := reply.([]any)
	m := map[string]string{}
	for i := 0; i+1 < len(a); i += 2 {
		k, _ := a[i].(string)
		v, _ := a[i+1].(string)
		m[k] = v
	}
	return m
}

// infoField returns field name of an INFO reply ("name:value" lines).
func infoField(reply any, name string) string {
	s, _ := reply.(string)
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(l, "\r"), name+":"); ok {
			return v
		}
	}
	return ""
}
