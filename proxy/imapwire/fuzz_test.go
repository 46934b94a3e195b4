package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// errorTexts are all the texts an *Error may carry.
var errorTexts = map[string]bool{
	textLineTooLong: true, textCommandTooLong: true, textEmptyLine: true, textBareLF: true,
	textBadTag: true, textNoCommand: true, textBadCommand: true, textSyntax: true,
	textBadQuoted: true, textBadLiteralSize: true, textLiteralTooBig: true, textLiteral8: true,
	textLiteralNUL: true, textTooManyArgs: true, textNestedList: true, textTooManyItems: true,
}

// FuzzReadCommand reads commands from arbitrary bytes until the stream ends
// or a fatal error. It checks that the reader never panics, returns a
// Command or an error but never both, keeps to its limits, and that every
// Command it returns reads back the same once encoded again.
// The seed corpus is in testdata/fuzz/FuzzReadCommand.
func FuzzReadCommand(f *testing.F) {
	for _, tc := range transcripts {
		f.Add([]byte(tc.c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &countingReader{r: bytes.NewReader(data)}
		const bufSize = 16 // smallest bufio size: exercise lines across fills
		br := bufio.NewReaderSize(src, bufSize)
		r := NewReader(br, func() error { return nil })
		consumed := 0
		for {
			cmd, err := r.ReadCommand()
			n := src.n - br.Buffered() - consumed
			consumed += n
			if n > MaxLineBytes+bufSize {
				t.Fatalf("one command consumed %d bytes", n)
			}
			if cap(r.lit) > MaxLiteralBytes || cap(r.buf) > 2*MaxLineBytes {
				t.Fatalf("buffers grew to %d and %d bytes", cap(r.lit), cap(r.buf))
			}
			if (cmd == nil) == (err == nil) {
				t.Fatalf("ReadCommand returned %v and %v", cmd, err)
			}
			if err != nil {
				var perr *Error
				if !errors.As(err, &perr) {
					if err != io.EOF && err != io.ErrUnexpectedEOF {
						t.Fatalf("unexpected error %v", err)
					}
					return
				}
				if !errorTexts[perr.Text] || (perr.Tag != "" && !validTag(perr.Tag)) {
					t.Fatalf("bad error %+v", perr)
				}
				if perr.Fatal {
					return
				}
				if n == 0 {
					t.Fatal("non-fatal error consumed nothing")
				}
				continue
			}
			checkCommand(t, cmd)
			enc := encode(cmd)
			if len(enc) > MaxLineBytes {
				continue
			}
			again, err := NewReader(bufio.NewReader(strings.NewReader(enc)), nil).ReadCommand()
			if err != nil || !reflect.DeepEqual(again, cmd) {
				t.Fatalf("%q read as %+v, encoded %q read back as %+v, %v", data, cmd, enc, again, err)
			}
		}
	})
}

func validTag(tag string) bool {
	for i := 0; i < len(tag); i++ {
		if !tagChars[tag[i]] {
			return false
		}
	}
	return tag != ""
}

// checkCommand checks that cmd keeps to the grammar and the limits.
func checkCommand(t *testing.T, cmd *Command) {
	t.Helper()
	if !validTag(cmd.Tag) || cmd.Name == "" || cmd.Name != strings.ToUpper(cmd.Name) {
		t.Fatalf("bad tag or name in %+v", cmd)
	}
	if len(cmd.Args) > MaxArgs {
		t.Fatalf("%d args", len(cmd.Args))
	}
	total := 0
	var check func(a Arg, inList bool)
	check = func(a Arg, inList bool) {
		total += len(a.Value)
		switch a.Kind {
		case Atom, Nil:
			if a.Value == "" || strings.ContainsAny(a.Value, "(){ %*\"\\\r\n\x00") {
				t.Fatalf("bad atom %q", a.Value)
			}
			if (a.Kind == Nil) != strings.EqualFold(a.Value, "NIL") {
				t.Fatalf("atom %q has kind %v", a.Value, a.Kind)
			}
		case Quoted:
			if strings.ContainsAny(a.Value, "\r\n\x00") {
				t.Fatalf("bad quoted %q", a.Value)
			}
		case Literal:
			if len(a.Value) > MaxLiteralBytes || strings.Contains(a.Value, "\x00") {
				t.Fatalf("bad literal of %d bytes", len(a.Value))
			}
		case List:
			if inList || len(a.List) > MaxListItems {
				t.Fatalf("bad list %+v", a)
			}
			for _, m := range a.List {
				check(m, true)
			}
		default:
			t.Fatalf("bad kind %v", a.Kind)
		}
	}
	for _, a := range cmd.Args {
		check(a, false)
	}
	if total > MaxLineBytes {
		t.Fatalf("command holds %d bytes", total)
	}
}

// encode writes cmd back in wire form, literals as non-synchronizing.
func encode(cmd *Command) string {
	var b strings.Builder
	b.WriteString(cmd.Tag + " " + cmd.Name)
	for _, a := range cmd.Args {
		b.WriteByte(' ')
		encodeArg(&b, a)
	}
	b.WriteString("\r\n")
	return b.String()
}

func encodeArg(b *strings.Builder, a Arg) {
	switch a.Kind {
	case Atom, Nil:
		b.WriteString(a.Value)
	case Quoted:
		b.WriteByte('"')
		for i := 0; i < len(a.Value); i++ {
			if c := a.Value[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(a.Value[i])
		}
		b.WriteByte('"')
	case Literal:
		fmt.Fprintf(b, "{%d+}\r\n%s", len(a.Value), a.Value)
	case List:
		b.WriteByte('(')
		for i, m := range a.List {
			if i > 0 {
				b.WriteByte(' ')
			}
			encodeArg(b, m)
		}
		b.WriteByte(')')
	}
}

// BenchmarkReadCommand reads a typical LOGIN with an app passcode.
func BenchmarkReadCommand(b *testing.B) {
	const line = "a1 LOGIN alice \"ABCD EFGH IJKL MNOP\"\r\n"
	src := strings.NewReader(line)
	br := bufio.NewReader(src)
	r := NewReader(br, nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		src.Reset(line)
		br.Reset(src)
		if _, err := r.ReadCommand(); err != nil {
			b.Fatal(err)
		}
	}
}
