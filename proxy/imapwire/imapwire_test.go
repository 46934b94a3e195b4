package imapwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// Helpers that build expected values.
func atom(s string) Arg    { return Arg{Kind: Atom, Value: s} }
func quoted(s string) Arg  { return Arg{Kind: Quoted, Value: s} }
func literal(s string) Arg { return Arg{Kind: Literal, Value: s} }
func nilArg(s string) Arg  { return Arg{Kind: Nil, Value: s} }
func list(a ...Arg) Arg    { return Arg{Kind: List, List: a} }

func cmd(tag, name string, args ...Arg) step {
	return step{cmd: &Command{Tag: tag, Name: name, Args: args}}
}
func bad(tag, text string) step   { return step{err: &Error{Tag: tag, Text: text}} }
func fatal(tag, text string) step { return step{err: &Error{Tag: tag, Text: text, Fatal: true}} }

// lit returns a synchronizing literal carrying s.
func lit(s string) string { return fmt.Sprintf("{%d}\r\n%s", len(s), s) }

// step is one expected result of ReadCommand: a command or a protocol error.
type step struct {
	cmd *Command
	err *Error
}

// transcript is what the client sends (C:), what ReadCommand returns for it,
// step by step, how many continuation requests the server sent, and the
// bytes the reader must leave unread (not checked after a Fatal error when
// rest is "").
type transcript struct {
	name  string
	c     string
	want  []step
	conts int
	rest  string
}

var transcripts = []transcript{
	{name: "capability", c: "a1 CAPABILITY\r\n", want: []step{cmd("a1", "CAPABILITY")}},
	{name: "name upper-cased", c: "x.y noop\r\nA2 LogOut\r\n",
		want: []step{cmd("x.y", "NOOP"), cmd("A2", "LOGOUT")}},
	{name: "tag with ]", c: "a]1 NOOP\r\n", want: []step{cmd("a]1", "NOOP")}},
	{name: "atoms", c: "a1 LOGIN alice s3cr]t~!#\r\n",
		want: []step{cmd("a1", "LOGIN", atom("alice"), atom("s3cr]t~!#"))}},
	{name: "quoted with escapes", c: `a1 LOGIN "al\"ice" "pa\\ss word"` + "\r\n",
		want: []step{cmd("a1", "LOGIN", quoted(`al"ice`), quoted(`pa\ss word`))}},
	{name: "escape first and last", c: `a1 LOGIN "\\" "\"x\""` + "\r\n",
		want: []step{cmd("a1", "LOGIN", quoted(`\`), quoted(`"x"`))}},
	{name: "empty quoted and utf-8", c: "a1 LOGIN \"\" \"pässwörd\"\r\n",
		want: []step{cmd("a1", "LOGIN", quoted(""), quoted("pässwörd"))}},
	{name: "literal sync", c: "a1 LOGIN {5}\r\nalice {3}\r\npw!\r\n",
		want: []step{cmd("a1", "LOGIN", literal("alice"), literal("pw!"))}, conts: 2},
	{name: "literal non-sync", c: "a1 LOGIN {5+}\r\nalice {3+}\r\npw!\r\n",
		want: []step{cmd("a1", "LOGIN", literal("alice"), literal("pw!"))}},
	{name: "literal with CRLF spaces quotes", c: "a1 LOGIN alice " + lit("a \"b\"\r\n c\\ {1}\r\n") + "\r\n",
		want: []step{cmd("a1", "LOGIN", atom("alice"), literal("a \"b\"\r\n c\\ {1}\r\n"))}, conts: 1},
	{name: "empty literal", c: "a1 LOGIN {0}\r\n {0+}\r\n\r\n",
		want: []step{cmd("a1", "LOGIN", literal(""), literal(""))}, conts: 1},
	{name: "LOGIN literal user quoted password", c: "a1 LOGIN " + lit("alice@example.org") + ` "ABCD EFGH IJKL MNOP"` + "\r\n",
		want: []step{cmd("a1", "LOGIN", literal("alice@example.org"), quoted("ABCD EFGH IJKL MNOP"))}, conts: 1},
	{name: "LOGIN nil user", c: "a1 LOGIN nil pw\r\n",
		want: []step{cmd("a1", "LOGIN", nilArg("nil"), atom("pw"))}},
	{name: "ID list", c: `a1 ID ("name" "Thunderbird" "version" "115.0" "os" NIL)` + "\r\n",
		want: []step{cmd("a1", "ID", list(quoted("name"), quoted("Thunderbird"), quoted("version"),
			quoted("115.0"), quoted("os"), nilArg("NIL")))}},
	{name: "ID NIL", c: "a1 ID NIL\r\n", want: []step{cmd("a1", "ID", nilArg("NIL"))}},
	{name: "ID empty list", c: "a1 ID ()\r\n", want: []step{cmd("a1", "ID", list())}},
	{name: "ID literal in list", c: `a1 ID ("name" ` + lit("K-9") + ` "x" NIL)` + "\r\n",
		want: []step{cmd("a1", "ID", list(quoted("name"), literal("K-9"), quoted("x"), nilArg("NIL")))}, conts: 1},
	{name: "ID list of 60", c: "a1 ID (" + strings.Repeat("x ", MaxListItems-1) + "x)\r\n",
		want: []step{cmd("a1", "ID", list(repeatArg(atom("x"), MaxListItems)...))}},
	{name: "AUTHENTICATE PLAIN SASL-IR", c: "a1 AUTHENTICATE PLAIN AGFsaWNlAEFCQ0RFRkdISUpLTE1OT1A=\r\n",
		want: []step{cmd("a1", "AUTHENTICATE", atom("PLAIN"), atom("AGFsaWNlAEFCQ0RFRkdISUpLTE1OT1A="))}},
	{name: "AUTHENTICATE empty IR", c: "a1 authenticate plain =\r\n",
		want: []step{cmd("a1", "AUTHENTICATE", atom("plain"), atom("="))}},
	{name: "16 args", c: "a1 X" + strings.Repeat(" a", MaxArgs) + "\r\n",
		want: []step{cmd("a1", "X", repeatArg(atom("a"), MaxArgs)...)}},

	// Bad literal sizes: refused before "+", the line is consumed, and
	// the next command is read normally.
	{name: "literal -1", c: "a1 LOGIN {-1}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textBadLiteralSize), cmd("a2", "NOOP")}},
	{name: "literal abc", c: "a1 LOGIN {abc}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textBadLiteralSize), cmd("a2", "NOOP")}},
	{name: "literal empty", c: "a1 LOGIN {}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textBadLiteralSize), cmd("a2", "NOOP")}},
	{name: "literal +only", c: "a1 LOGIN {+}\r\n", want: []step{fatal("a1", textBadLiteralSize)}},
	{name: "literal 11 digits", c: "a1 LOGIN {99999999999}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textBadLiteralSize), cmd("a2", "NOOP")}},
	{name: "literal 4294967295", c: "a1 LOGIN {4294967295}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textLiteralTooBig), cmd("a2", "NOOP")}},
	{name: "literal 8193", c: "a1 LOGIN {8193}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textLiteralTooBig), cmd("a2", "NOOP")}},
	{name: "literal over command budget", c: "a1 LOGIN {8192}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textCommandTooLong), cmd("a2", "NOOP")}},
	{name: "non-sync 8193 fatal", c: "a1 LOGIN {8193+}\r\nxxxx", want: []step{fatal("a1", textLiteralTooBig)}, rest: "xxxx"},
	{name: "non-sync 4294967295 fatal", c: "a1 LOGIN {4294967295+}\r\nxx", want: []step{fatal("a1", textLiteralTooBig)}, rest: "xx"},
	{name: "non-sync bad size fatal", c: "a1 LOGIN {-1+}\r\n", want: []step{fatal("a1", textBadLiteralSize)}},
	{name: "error before non-sync literal fatal", c: "a1 LOGIN \"a\\q\" {5+}\r\nhello\r\n",
		want: []step{fatal("a1", textBadQuoted)}, rest: "hello\r\n"},
	{name: "error before sync literal", c: "a1 LOGIN \"a\\q\" {5}\r\na2 NOOP\r\n",
		want: []step{bad("a1", textBadQuoted), cmd("a2", "NOOP")}},
	{name: "literal not last", c: "a1 LOGIN {5} pw\r\na2 NOOP\r\n",
		want: []step{bad("a1", textSyntax), cmd("a2", "NOOP")}},
	{name: "literal8", c: "a1 LOGIN ~{5}\r\na2 LOGIN ~alice pw\r\n",
		want: []step{bad("a1", textLiteral8), cmd("a2", "LOGIN", atom("~alice"), atom("pw"))}},
	{name: "NUL in literal fatal", c: "a1 LOGIN {3+}\r\na\x00b pw\r\n", want: []step{fatal("a1", textLiteralNUL)}, rest: " pw\r\n"},
	{name: "bad after literal", c: "a1 LOGIN {1}\r\nx  pw\r\na2 NOOP\r\n",
		want: []step{bad("a1", textSyntax), cmd("a2", "NOOP")}, conts: 1},
	{name: "bare LF after literal", c: "a1 LOGIN {1}\r\nx pw\na2 NOOP\r\n",
		want: []step{bad("a1", textBareLF), cmd("a2", "NOOP")}, conts: 1},

	// Quoted strings.
	{name: "NUL in quoted", c: "a1 LOGIN \"a\x00b\" pw\r\na2 NOOP\r\n",
		want: []step{bad("a1", textBadQuoted), cmd("a2", "NOOP")}},
	{name: "CR in quoted", c: "a1 LOGIN \"a\rb\" pw\r\n", want: []step{bad("a1", textBadQuoted)}},
	{name: "bad escape", c: `a1 LOGIN "a\nb" pw` + "\r\n", want: []step{bad("a1", textBadQuoted)}},
	{name: "unterminated quoted", c: "a1 LOGIN \"abc\r\n", want: []step{bad("a1", textBadQuoted)}},
	{name: "escape at end", c: "a1 LOGIN \"abc\\\r\n", want: []step{bad("a1", textBadQuoted)}},

	// Lines, tags, names, separators.
	{name: "bare LF", c: "a1 NOOP\na2 NOOP\r\n", want: []step{bad("a1", textBareLF), cmd("a2", "NOOP")}},
	{name: "empty line", c: "\r\na2 NOOP\r\n", want: []step{bad("", textEmptyLine), cmd("a2", "NOOP")}},
	{name: "only LF", c: "\na2 NOOP\r\n", want: []step{bad("", textEmptyLine), cmd("a2", "NOOP")}},
	{name: "tag with +", c: "a+1 NOOP\r\n+ NOOP\r\n", want: []step{bad("", textBadTag), bad("", textBadTag)}},
	{name: "tag with *", c: "* NOOP\r\n", want: []step{bad("", textBadTag)}},
	{name: "leading space", c: " a1 NOOP\r\n", want: []step{bad("", textBadTag)}},
	{name: "missing name", c: "a1\r\na2 \r\n", want: []step{bad("a1", textNoCommand), bad("a2", textNoCommand)}},
	{name: "bad name", c: "a1 (NOOP)\r\na2 NO\"OP\r\n", want: []step{bad("a1", textBadCommand), bad("a2", textBadCommand)}},
	{name: "double space", c: "a1 LOGIN  alice pw\r\n", want: []step{bad("a1", textSyntax)}},
	{name: "trailing space", c: "a1 NOOP \r\n", want: []step{bad("a1", textSyntax)}},
	{name: "8-bit atom", c: "a1 LOGIN älice pw\r\n", want: []step{bad("a1", textSyntax)}},
	{name: "CR inside line", c: "a1 NOOP\r\r\n", want: []step{bad("a1", textBadCommand)}},
	{name: "17 args", c: "a1 X" + strings.Repeat(" a", MaxArgs+1) + "\r\n", want: []step{bad("a1", textTooManyArgs)}},
	{name: "61 list items", c: "a1 ID (" + strings.Repeat("x ", MaxListItems) + "x)\r\n", want: []step{bad("a1", textTooManyItems)}},
	{name: "nested list", c: "a1 ID ((a))\r\n", want: []step{bad("a1", textNestedList)}},
	{name: "unterminated list", c: "a1 ID (a b\r\n", want: []step{bad("a1", textSyntax)}},
	{name: "list spacing", c: "a1 ID ( a)\r\na2 ID (a )\r\na3 ID (a)b\r\n",
		want: []step{bad("a1", textSyntax), bad("a2", textSyntax), bad("a3", textSyntax)}},

	// Nothing past the command's CRLF is consumed.
	{name: "pipelined", c: "a1 NOOP\r\na2 LOGIN {5+}\r\nalice pw\r\na3 CAP",
		want: []step{cmd("a1", "NOOP"), cmd("a2", "LOGIN", literal("alice"), atom("pw"))}, rest: "a3 CAP"},
	{name: "STARTTLS injection left buffered", c: "a1 STARTTLS\r\na2 LOGIN alice pw\r\n",
		want: []step{cmd("a1", "STARTTLS")}, rest: "a2 LOGIN alice pw\r\n"},

	// Line limits.
	{name: "line of MaxLineBytes", c: "a1 X " + strings.Repeat("a", MaxLineBytes-7) + "\r\n",
		want: []step{cmd("a1", "X", atom(strings.Repeat("a", MaxLineBytes-7)))}},
	{name: "line of MaxLineBytes+1", c: "a1 X " + strings.Repeat("a", MaxLineBytes-6) + "\r\n",
		want: []step{fatal("a1", textLineTooLong)}},
	{name: "command too long", c: "a1 LOGIN {8000}\r\n" + strings.Repeat("x", 8000) + " " + strings.Repeat("y", 200) + "\r\n",
		want: []step{fatal("a1", textCommandTooLong)}, conts: 1},
}

func repeatArg(a Arg, n int) []Arg {
	args := make([]Arg, n)
	for i := range args {
		args[i] = a
	}
	return args
}

func TestTranscripts(t *testing.T) {
	for _, size := range []int{16, 4096} { // 16 forces lines across buffer fills
		for _, tc := range transcripts {
			t.Run(fmt.Sprintf("%s/buf%d", tc.name, size), func(t *testing.T) {
				br := bufio.NewReaderSize(strings.NewReader(tc.c), size)
				conts := 0
				r := NewReader(br, func() error { conts++; return nil })
				for i, want := range tc.want {
					got, err := r.ReadCommand()
					checkStep(t, i, want, got, err)
				}
				if conts != tc.conts {
					t.Errorf("sent %d continuation requests, want %d", conts, tc.conts)
				}
				if last := tc.want[len(tc.want)-1]; last.err != nil && last.err.Fatal && tc.rest == "" {
					return // the connection is closed; what is left does not matter
				}
				rest, _ := io.ReadAll(br)
				if string(rest) != tc.rest {
					t.Errorf("left unread %q, want %q", rest, tc.rest)
				}
			})
		}
	}
}

func checkStep(t *testing.T, i int, want step, got *Command, err error) {
	t.Helper()
	if got != nil && err != nil {
		t.Fatalf("step %d: returned both %+v and %v", i, got, err)
	}
	if want.err != nil {
		var perr *Error
		if !errors.As(err, &perr) {
			t.Fatalf("step %d: got %+v, %v; want %+v", i, got, err, want.err)
		}
		if *perr != *want.err {
			t.Fatalf("step %d: got error %+v, want %+v", i, perr, want.err)
		}
		return
	}
	if err != nil {
		t.Fatalf("step %d: unexpected error %v", i, err)
	}
	if !reflect.DeepEqual(got, want.cmd) {
		t.Fatalf("step %d:\n got %+v\nwant %+v", i, got, want.cmd)
	}
}

func TestConnectionErrors(t *testing.T) {
	errCont := errors.New("write failed")
	for _, tc := range []struct {
		name string
		c    string
		cont error
		want error
	}{
		{"eof between commands", "", nil, io.EOF},
		{"eof after command", "a1 NOOP\r\n", nil, nil},
		{"eof mid line", "a1 NOO", nil, io.ErrUnexpectedEOF},
		{"eof in literal", "a1 LOGIN {5}\r\nali", nil, io.ErrUnexpectedEOF},
		{"eof after literal", "a1 LOGIN {5}\r\nalice", nil, io.ErrUnexpectedEOF},
		{"cont fails", "a1 LOGIN {5}\r\nalice\r\n", errCont, errCont},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(bufio.NewReader(strings.NewReader(tc.c)), func() error { return tc.cont })
			cmd, err := r.ReadCommand()
			if tc.want == nil { // one command, then EOF
				if err != nil {
					t.Fatal(err)
				}
				cmd, err = r.ReadCommand()
				tc.want = io.EOF
			}
			if cmd != nil || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, %v; want %v", cmd, err, tc.want)
			}
			var perr *Error
			if errors.As(err, &perr) {
				t.Fatalf("connection error reported as protocol error %v", perr)
			}
		})
	}
}

func TestReadLine(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("AGFsaWNlAHB3\r\n*\r\n=\nb\r\n"+strings.Repeat("x", MaxLineBytes-1)+"\r\nrest"), 16)
	r := NewReader(br, nil)
	for _, want := range []string{"AGFsaWNlAHB3", "*"} {
		got, err := r.ReadLine()
		if err != nil || got != want {
			t.Fatalf("ReadLine = %q, %v; want %q", got, err, want)
		}
	}
	var perr *Error
	if _, err := r.ReadLine(); !errors.As(err, &perr) || *perr != (Error{Text: textBareLF}) {
		t.Fatalf("bare LF: got %v", err)
	}
	if got, err := r.ReadLine(); err != nil || got != "b" {
		t.Fatalf("after bare LF: %q, %v", got, err)
	}
	if _, err := r.ReadLine(); !errors.As(err, &perr) || *perr != (Error{Text: textLineTooLong, Fatal: true}) {
		t.Fatalf("long line: got %v", err)
	}
}

func TestErrorString(t *testing.T) {
	if got := (&Error{Tag: "a1", Text: "Line too long", Fatal: true}).Error(); got != "imapwire: Line too long (fatal)" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&Error{Text: "Invalid tag"}).Error(); got != "imapwire: Invalid tag" {
		t.Errorf("Error() = %q", got)
	}
}
