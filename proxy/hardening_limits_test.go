package proxy_test

// Hardening, literals and lines, through the fronts with a memory
// assertion: a 1 MB line without CRLF, a LITERAL+ flood and literal sizes
// at and past 2^32 get a clean refusal or a close, and kanmon allocates
// a small fraction of what the client sent. (The parser's own bounds are
// in imapwire's TestLongLineBounded and TestHugeLiteralDoesNotAllocate;
// the replies in TestIMAPLiteralAndLineLimits, TestPOP3LineLimits and
// TestSMTPLineLimits.)

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// floodBudget is the most the whole process (kanmon, and the test's
// client reading replies) may allocate while a client sends 1 MB it must
// not keep.
const floodBudget = 256 << 10

// heapDuring returns the bytes allocated on the heap, by every goroutine,
// while f ran.
func heapDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHardeningFloodMemory(t *testing.T) {
	mb := strings.Repeat("x", 1<<20)
	var flood strings.Builder
	flood.WriteString("a1 LOGIN")
	for flood.Len() < 1<<20 {
		flood.WriteString(" {64+}\r\n" + strings.Repeat("y", 64))
	}
	literalFlood := flood.String() + "\r\n"
	var pipelined strings.Builder
	for i := 0; pipelined.Len() < 1<<20; i++ {
		fmt.Fprintf(&pipelined, "p%d LOGIN {5+}\r\nalice {16+}\r\nWRONGWRONGWRONGW\r\n", i)
	}
	for _, tc := range []struct {
		proto string
		name  string
		send  string
		steps []string
	}{
		{protoIMAP, "1 MB line without CRLF", mb, []string{"S: * BAD Line too long", "S: * BYE ...", "EOF"}},
		{protoIMAP, "LITERAL+ flood in one command", literalFlood, []string{"S: a1 BAD Too many arguments", "S: * BYE Cannot continue after that error.", "EOF"}},
		{protoIMAP, "LITERAL+ over the command budget", "a1 LOGIN {8000+}\r\n" + strings.Repeat("u", 8000) + " {8000+}\r\n" + mb,
			[]string{"S: a1 BAD Command too long", "S: * BYE Cannot continue after that error.", "EOF"}},
		{protoIMAP, "pipelined LITERAL+ logins", pipelined.String(), []string{"S: p0 " + failedReply, "S: p1 " + failedReply, "S: p2 " + failedReply, "S: * BYE Too many invalid commands.", "EOF"}},
		{protoIMAP, "{4294967295}", "a1 LOGIN {4294967295}\r\n" + mb, []string{"S: a1 BAD Literal too large", "S: * BAD ...", "S: * BYE ...", "EOF"}},
		{protoIMAP, "{4294967295+}", "a1 LOGIN {4294967295+}\r\n" + mb, []string{"S: a1 BAD Literal too large", "S: * BYE Cannot continue after that error.", "EOF"}},
		{protoIMAP, "{18446744073709551616+}", "a1 LOGIN {18446744073709551616+}\r\n" + mb, []string{"S: a1 BAD Invalid literal size", "S: * BYE Cannot continue after that error.", "EOF"}},
		{protoPOP3, "1 MB line without CRLF", mb, []string{"S: -ERR Line too long.", "EOF"}},
		{protoPOP3, "1 MB SASL response", "AUTH PLAIN\r\n" + mb, []string{"S: + ", "S: -ERR Line too long.", "EOF"}},
		{protoSMTP, "1 MB line without CRLF", mb, []string{"S: 500 5.5.2 Line too long", "EOF"}},
		{protoSMTP, "1 MB SASL response", "AUTH PLAIN\r\n" + mb, []string{"S: 334 ", "S: 500 5.5.6 Authentication Exchange line is too long", "EOF"}},
		{protoSMTP, "1 MB BDAT chunk before AUTH", "BDAT 1048576 LAST\r\n" + mb, []string{"S: " + smtpAuthNeeded}},
	} {
		t.Run(tc.proto+" "+tc.name, func(t *testing.T) {
			k := kanmonFor(t, tc.proto, deadAddr(t), kanmontest.Options{})
			_, _, plain := listeners(k, tc.proto)
			c := dial(t, plain)
			c.run(greeting(tc.proto))
			if tc.proto == protoSMTP {
				c.ehlo("client.example.org")
			}
			payload := []byte(tc.send)
			used := heapDuring(func() {
				// Written concurrently: kanmon stops reading at its
				// limit, so the write may block or fail.
				done := make(chan struct{})
				go func() {
					defer close(done)
					_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
					_, _ = c.conn.Write(payload)
				}()
				c.run(tc.steps...)
				c.conn.Close()
				<-done
			})
			t.Logf("%d bytes allocated for %d bytes sent", used, len(payload))
			if used > floodBudget {
				t.Errorf("%d bytes allocated while the client sent %d, want at most %d", used, len(payload), floodBudget)
			}
		})
	}
}

// A NUL in an IMAP quoted string or literal never becomes part of a user
// name or password: BAD (fatal for a literal, whose end is then unknown),
// and the backend is not asked.
func TestHardeningIMAPNUL(t *testing.T) {
	w := newWorld(t, worldOptions{})
	c := dial(t, w.k.IMAPPlain)
	c.run(
		"S: * OK [CAPABILITY ...",
		"C: a1 LOGIN \"car\x00ol\" "+carolPW,
		"S: a1 BAD ...",
		"C: a2 LOGIN carol \"x\x00"+carolPW+"\"",
		"S: a2 BAD ...",
		"C: a3 NOOP",
		"S: a3 OK NOOP completed.",
		"C: a4 LOGIN {6+}\r\ncar\x00ol "+carolPW,
		"S: a4 BAD NUL in literal",
		"S: * BYE Cannot continue after that error.",
		"EOF",
	)
	if n := w.backend.accepts.Load(); n != 0 {
		t.Errorf("the backend was asked %d times", n)
	}
}
