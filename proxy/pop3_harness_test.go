package proxy_test

// The harness of the in-process POP3 tests: a small fake POP3 backend
// (there is no Go POP3 server library to run in-process) behind kanmon's
// POP3 listeners. The transcripts use conv from harness_test.go.

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Users of the fake backend besides alice and carol: dave (no 2FA) finds
// his mailbox locked, erin (no 2FA) has a password too long for an AUTH
// PLAIN initial response.
const (
	davePW = "dave-own-pw-Hh71"
	// pop3InUseReply is what the fake answers for dave, as Dovecot does
	// for a mailbox another session holds.
	pop3InUseReply = "-ERR [IN-USE] Mailbox is locked by another POP3 session."
)

var erinPW = strings.Repeat("erin-long-pw-", 230) // 2990 bytes

// Exact lines kanmon's POP3 front sends.
const (
	pop3Greeting    = "+OK kanmon ready."
	pop3Failed      = "-ERR [AUTH] " + auth.FailureText
	pop3Unavailable = "-ERR [SYS/TEMP] Login is temporarily unavailable. Please try again later."
	pop3Privacy     = "-ERR Use STLS before logging in."
	pop3NotAllowed  = "-ERR Command not allowed before authentication."
)

// fakePOP3 is a POP3 server with just enough of RFC 1939 for a poll:
// AUTH PLAIN (master or the user's own password), CAPA, STAT, LIST, RETR,
// DELE, NOOP and QUIT, which commits the deletions.
type fakePOP3 struct {
	// continuations counts AUTH PLAIN logins sent without an initial
	// response.
	continuations atomic.Int64

	mu        sync.Mutex
	passwords map[string]string   // users and their own passwords
	boxes     map[string][]string // user → messages
	inUse     map[string]bool     // logins answered [IN-USE]
}

func newFakePOP3() *fakePOP3 {
	return &fakePOP3{
		passwords: map[string]string{"alice": alicePW, "carol": carolPW, "dave": davePW, "erin": erinPW},
		boxes:     map[string][]string{},
		inUse:     map[string]bool{"dave": true},
	}
}

// deliver appends a message to user's mailbox.
func (f *fakePOP3) deliver(user, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.boxes[user] = append(f.boxes[user], "Subject: test\r\n\r\n"+body+"\r\n")
}

// count is how many messages user has.
func (f *fakePOP3) count(user string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.boxes[user])
}

// login checks an AUTH PLAIN response: the master acting for a user, or
// a user with an own password and no authzid.
func (f *fakePOP3) login(resp string) (user, reply string) {
	raw, err := base64.StdEncoding.DecodeString(resp)
	parts := strings.Split(string(raw), "\x00")
	if err != nil || len(parts) != 3 {
		return "", "-ERR Invalid base64 data in continued response"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	authzid, authcid, pw := parts[0], parts[1], parts[2]
	switch {
	case authcid == masterUser && pw == masterPW && f.passwords[authzid] != "":
		user = authzid
	case authzid == "" && pw != "" && f.passwords[authcid] == pw:
		user = authcid
	default:
		return "", "-ERR [AUTH] Authentication failed."
	}
	if f.inUse[user] {
		return "", pop3InUseReply
	}
	return user, "+OK Logged in."
}

// serve runs one connection.
func (f *fakePOP3) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * ioTimeout))
	br := bufio.NewReader(c)
	send := func(s string) { _, _ = io.WriteString(c, s+"\r\n") }
	read := func() (string, bool) {
		l, err := br.ReadString('\n')
		return strings.TrimRight(l, "\r\n"), err == nil
	}
	send("+OK fake POP3 ready.")
	var user string
	deleted := map[int]bool{}
	for {
		line, ok := read()
		if !ok {
			return
		}
		cmd, arg, _ := strings.Cut(line, " ")
		n, _ := strconv.Atoi(arg)
		f.mu.Lock()
		box := f.boxes[user]
		f.mu.Unlock()
		valid := user != "" && n >= 1 && n <= len(box) && !deleted[n]
		switch cmd = strings.ToUpper(cmd); {
		case cmd == "CAPA" && user == "":
			send("+OK\r\nUSER\r\nSASL PLAIN\r\n.")
		case cmd == "CAPA":
			send("+OK\r\nTOP\r\nUIDL\r\nX-FAKE-BACKEND\r\n.")
		case cmd == "AUTH" && user == "":
			resp, ok := strings.CutPrefix(arg, "PLAIN ")
			if arg == "PLAIN" {
				f.continuations.Add(1)
				send("+ ")
				if resp, ok = read(); !ok {
					return
				}
			} else if !ok {
				send("-ERR Unsupported mechanism")
				continue
			}
			var reply string
			user, reply = f.login(resp)
			send(reply)
		case cmd == "NOOP":
			send("+OK")
		case cmd == "QUIT":
			f.commit(user, deleted)
			send("+OK Logging out.")
			return
		case user == "":
			send("-ERR Unknown command.")
		case cmd == "STAT" || cmd == "LIST" && arg == "":
			var lines []string
			size := 0
			for i, m := range box {
				if !deleted[i+1] {
					lines = append(lines, fmt.Sprintf("%d %d", i+1, len(m)))
					size += len(m)
				}
			}
			if cmd == "STAT" {
				send(fmt.Sprintf("+OK %d %d", len(lines), size))
			} else {
				send(strings.Join(append(append([]string{fmt.Sprintf("+OK %d messages:", len(lines))}, lines...), "."), "\r\n"))
			}
		case cmd == "RETR" && valid:
			send(fmt.Sprintf("+OK %d octets\r\n%s.", len(box[n-1]), box[n-1]))
		case cmd == "DELE" && valid:
			deleted[n] = true
			send("+OK Marked to be deleted.")
		default:
			send("-ERR Invalid command or message number.")
		}
	}
}

// commit removes the messages marked deleted, as QUIT's UPDATE state does.
func (f *fakePOP3) commit(user string, deleted map[int]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var nums []int
	for n := range deleted {
		nums = append(nums, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	for _, n := range nums {
		box := f.boxes[user]
		f.boxes[user] = append(box[:n-1:n-1], box[n:]...)
	}
}

// pop3World is kanmon's POP3 listeners in front of the fake backend, with
// alice on 2FA (one passcode) and carol, dave and erin without.
type pop3World struct {
	k        *kanmontest.Kanmon
	fake     *fakePOP3
	backend  *tcpServer
	passcode string // alice's passcode
}

func newPOP3World(t testing.TB, o worldOptions) *pop3World {
	t.Helper()
	fake := newFakePOP3()
	srv := startTCPServer(t, fake.serve)
	k := kanmonAt(t, protoPOP3, srv.addr, o)
	return &pop3World{k: k, fake: fake, backend: srv, passcode: k.Passcode("alice", app)}
}

// pop3Capa is the transcript of CAPA with the given capabilities.
func pop3Capa(caps ...string) []string {
	steps := []string{"C: CAPA", "S: +OK Capability list follows."}
	for _, c := range caps {
		steps = append(steps, "S: "+c)
	}
	return append(steps, "S: .")
}

// expectPOP3Session checks that the session is relayed to the backend:
// the client's CAPA is answered by the fake's post-login list, and a
// poll (LIST, RETR, DELE, QUIT) works and commits.
func expectPOP3Session(t *testing.T, w *pop3World, c *conv, user string) {
	t.Helper()
	w.fake.deliver(user, "hello "+user)
	before := w.fake.count(user)
	c.run("C: CAPA", "S: +OK", "S: TOP", "S: UIDL", "S: X-FAKE-BACKEND", "S: .")
	c.run("C: LIST", "S: +OK ...")
	for l := c.line(); l != "."; l = c.line() {
	}
	c.run(
		fmt.Sprintf("C: RETR %d", before),
		"S: +OK ...",
		"S: Subject: test",
		"S: ",
		"S: hello "+user,
		"S: .",
		fmt.Sprintf("C: DELE %d", before),
		"S: +OK Marked to be deleted.",
		"C: QUIT",
		"S: +OK Logging out.",
		"EOF",
	)
	if got := w.fake.count(user); got != before-1 {
		t.Errorf("after DELE and QUIT %s has %d messages, want %d", user, got, before-1)
	}
}
