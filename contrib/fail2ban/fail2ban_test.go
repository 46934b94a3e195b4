// Package fail2ban_test checks contrib/fail2ban/filter.d/kanmon.conf
// against the log lines a real, in-process kanmon writes: every failed
// login it should count matches with the client's IP, the reasons it
// should ignore are ignored, and no other line matches, whatever user
// name a client sends.
package fail2ban_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

const filterFile = "filter.d/kanmon.conf"

// hostRE is what fail2ban substitutes for <HOST>: R_HOST[RI_HOST] of
// fail2ban/server/failregex.py (1.0.2), an IPv4, IPv6 or DNS name in the
// named groups ip4, ip6 and dns. The jail sets usedns = no, which drops
// the dns alternative; the test keeps it, the looser of the two. Python's
// lookbehind in the IPv6 part, (?<=:):, has no RE2 equivalent and becomes
// ":", which accepts a little more.
const hostRE = `(?:\[?(?:(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})|(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|:)))\]?|(?P<dns>[\w\-.^_]*\w))`

// filter is the compiled filter.
type filter struct {
	fail, ignore []*regexp.Regexp
}

// loadFilter reads the [Definition] of a fail2ban filter file: key = value
// lines whose values continue on indented lines, one regex per line.
func loadFilter(t *testing.T, path string) filter {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string][]string{}
	section, key := "", ""
	for n, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") || strings.TrimSpace(line) == "":
			continue
		case strings.HasPrefix(line, "["):
			section, key = strings.Trim(strings.TrimSpace(line), "[]"), ""
		case line[0] == ' ' || line[0] == '\t':
			if key == "" {
				t.Fatalf("%s:%d: continuation line without a key", path, n+1)
			}
			values[key] = append(values[key], strings.TrimSpace(line))
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s:%d: want key = value", path, n+1)
			}
			key = ""
			if section == "Definition" {
				key = strings.TrimSpace(k)
				values[key] = nil
				if v = strings.TrimSpace(v); v != "" {
					values[key] = []string{v}
				}
			}
		}
	}
	compile := func(name string) []*regexp.Regexp {
		var res []*regexp.Regexp
		for _, v := range values[name] {
			if strings.Contains(v, "%(") {
				t.Fatalf("%s: %s uses %%(...)s interpolation, which this test does not expand", path, name)
			}
			v = strings.ReplaceAll(v, "%%", "%")
			v = strings.ReplaceAll(v, "<HOST>", hostRE)
			if tag := regexp.MustCompile(`<F?-?[A-Z][A-Z0-9_-]*>`).FindString(v); tag != "" {
				t.Fatalf("%s: %s uses the tag %s, which this test does not expand", path, name, tag)
			}
			re, err := regexp.Compile(v)
			if err != nil {
				t.Fatalf("%s: %s: %v", path, name, err)
			}
			res = append(res, re)
		}
		return res
	}
	f := filter{fail: compile("failregex"), ignore: compile("ignoreregex")}
	if len(f.fail) == 0 {
		t.Fatalf("%s: no failregex", path)
	}
	return f
}

// match applies the filter to one line as fail2ban does: the first
// failregex that matches gives the host, unless an ignoreregex matches.
// It returns the host ("" for no match) and whether the line was ignored.
func (f filter) match(line string) (host string, ignored bool, err error) {
	for _, re := range f.fail {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, re := range f.ignore {
			if re.MatchString(line) {
				return "", true, nil
			}
		}
		ip4, ip6, dns := m[re.SubexpIndex("ip4")], m[re.SubexpIndex("ip6")], m[re.SubexpIndex("dns")]
		if dns != "" {
			return "", false, fmt.Errorf("<HOST> matched the name %q, not an address", dns)
		}
		return ip4 + ip6, false, nil
	}
	return "", false, nil
}

// Credentials of the test world.
const (
	masterUser = "kanmon-master"
	masterPW   = "master-pw-F2b"
	alicePW    = "alice-account-pw-F2b" // alice has 2FA: her password is refused
	carolPW    = "carol-own-pw-F2b"     // carol has no 2FA: passthrough on campus
)

// attempt is one login and what the filter must make of its log line.
type attempt struct {
	from, user, secret string
	reason             string // expected reason= of the failure line, "" for a success
	ban                bool   // the failregex matches, with from as <HOST>
}

func TestFilterMatchesKanmonFailures(t *testing.T) {
	f := loadFilter(t, filterFile)

	_, memAddr := kanmontest.StartMemIMAP(t, masterUser, masterPW, map[string]string{"alice": alicePW, "carol": carolPW})
	// 127.0.0.1 and .2 are the campus; .3 and up are outside. The whole of
	// 127/8 is loopback on Linux, so each attempt can come from its own
	// address. dave has 2FA but no passcodes; two failures lock him out
	// from one address.
	k := kanmontest.Start(t, kanmontest.Options{
		IMAPBackend:     memAddr,
		MasterUser:      masterUser,
		MasterPassword:  masterPW,
		TrustedNetworks: []string{"127.0.0.1/32", "127.0.0.2/32"},
		Passcodes:       map[string][]string{"alice": {"Thunderbird"}, "dave": nil},
		Lockout:         kanmontest.DefaultLockout + "account_ip_threshold = 2\n",
	})
	passcode := k.Passcode("alice", "Thunderbird")

	attempts := []attempt{
		{"127.0.0.2", "alice", alicePW, "2FA account presented a non-passcode secret", true},
		{"127.0.0.2", "alice", alicePW, "repeated stale secret", false},
		{"127.0.0.3", "alice", "WRONGWRONGWRONGW", "no passcode matched", true},
		{"127.0.0.2", "carol", "not-carols-pw", "backend rejected the password", true},
		{"127.0.0.4", "carol", carolPW, "account without 2FA outside trusted_networks", false},
		// User names chosen to steer the filter: the host must stay the
		// real client, and a fake reason must not get the line ignored.
		// ([users] refuses them all, before the backend.)
		{"127.0.0.2", "x client=203.0.113.9 user=y", "pw", "user name refused", true},
		{"127.0.0.2", `a" reason="repeated stale secret`, "pw", "user name refused", true},
		{"127.0.0.2", "b\nclient=203.0.113.9 user=", "pw", "user name refused", true},
		{"127.0.0.5", "dave", "AAAAAAAAAAAAAAAA", "no passcode matched (2FA account has no passcodes)", true},
		{"127.0.0.5", "dave", "BBBBBBBBBBBBBBBB", "no passcode matched (2FA account has no passcodes)", true},
		{"127.0.0.5", "dave", "CCCCCCCCCCCCCCCC", "locked: account+ip", true},
		{"127.0.0.3", "alice", passcode, "", false},
	}
	var wantBans []string
	for i, a := range attempts {
		before := len(k.Logs())
		reply := login(t, k.IMAPPlain, a)
		if ok := strings.HasPrefix(reply, "a1 OK"); ok != (a.reason == "") {
			t.Fatalf("attempt %d (%s from %s): reply %q", i, a.user, a.from, reply)
		}
		var failures []string
		for _, line := range strings.Split(k.Logs()[before:], "\n") {
			if strings.Contains(line, ` msg="login failed" `) {
				failures = append(failures, line)
			}
		}
		if a.reason == "" {
			if len(failures) != 0 {
				t.Errorf("attempt %d: a successful login logged %q", i, failures)
			}
			continue
		}
		if len(failures) != 1 {
			t.Fatalf("attempt %d (%s from %s): want one failure line, got %q", i, a.user, a.from, failures)
		}
		line := failures[0]
		if !strings.Contains(line, fmt.Sprintf(" client=%s ", a.from)) || !strings.Contains(line, fmt.Sprintf(" reason=%q", a.reason)) {
			t.Fatalf("attempt %d: want client=%s reason=%q, got %s", i, a.from, a.reason, line)
		}
		host, ignored, err := f.match(line)
		switch {
		case err != nil:
			t.Errorf("attempt %d: %v\n%s", i, err, line)
		case a.ban && host != a.from:
			t.Errorf("attempt %d: filter gave host %q (ignored %v), want %s\n%s", i, host, ignored, a.from, line)
		case !a.ban && (!ignored || host != ""):
			t.Errorf("attempt %d: filter should ignore this line, got host %q\n%s", i, host, line)
		}
		if a.ban {
			wantBans = append(wantBans, a.from)
		}
	}

	k.Stop() // every session has ended and logged so
	logs := k.Logs()
	var bans []string
	for _, line := range strings.Split(strings.TrimSuffix(logs, "\n"), "\n") {
		host, _, err := f.match(line)
		if err != nil {
			t.Errorf("%v\n%s", err, line)
		}
		if host == "" {
			continue
		}
		if !strings.Contains(line, ` msg="login failed" `) {
			t.Errorf("a line that is no failed login matches (host %s):\n%s", host, line)
		}
		bans = append(bans, host)
	}
	if !slices.Equal(bans, wantBans) {
		t.Errorf("over the whole log the filter found %q, want %q", bans, wantBans)
	}
	for _, secret := range []string{alicePW, carolPW, masterPW, passcode} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains the secret %q", secret)
		}
	}

	// The same lines as IPv6 clients, and from the other protocols, with
	// nothing but client= and proto= changed.
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `reason="no passcode matched"`) {
			continue
		}
		for _, v := range []struct{ from, proto, host string }{
			{"client=127.0.0.3", "proto=imap", "127.0.0.3"},
			{"client=127.0.0.3", "proto=pop3", "127.0.0.3"},
			{"client=127.0.0.3", "proto=submission", "2001:db8::7"},
			{"client=127.0.0.3", "proto=imap", "2001:db8:1:2:3:4:5:6"},
		} {
			l := strings.Replace(strings.Replace(line, v.from, "client="+v.host, 1), "proto=imap", v.proto, 1)
			if host, _, err := f.match(l); host != v.host || err != nil {
				t.Errorf("filter gave host %q (%v), want %s\n%s", host, err, v.host, l)
			}
		}
	}

	fail2banRegex(t, logs, wantBans)
}

// fail2banRegex runs the real fail2ban-regex over the log, if installed,
// and compares the addresses it finds.
func fail2banRegex(t *testing.T, logs string, want []string) {
	bin, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		t.Log("fail2ban-regex is not installed; checked with the translated regex only")
		return
	}
	logFile := filepath.Join(t.TempDir(), "kanmon.log")
	if err := os.WriteFile(logFile, []byte(logs), 0o600); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filterFile)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-o", "ip", logFile, abs).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	if !slices.Equal(got, want) {
		t.Errorf("fail2ban-regex found %q, want %q", got, want)
	}
}

// login makes one LOGIN from the loopback address a.from, with both
// arguments as LITERAL+ so that any bytes go through, and returns the
// tagged reply.
func login(t *testing.T, addr string, a attempt) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(a.from)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	var cmd bytes.Buffer
	fmt.Fprintf(&cmd, "a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n", len(a.user), a.user, len(a.secret), a.secret)
	if _, err := conn.Write(cmd.Bytes()); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the LOGIN reply: %v", err)
		}
		if strings.HasPrefix(line, "a1 ") {
			_, _ = conn.Write([]byte("a2 LOGOUT\r\n"))
			return strings.TrimRight(line, "\r\n")
		}
	}
}
