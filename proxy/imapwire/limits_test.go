package imapwire

import (
	"bufio"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// endless yields 'a' forever.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// allocated returns the bytes allocated on the heap while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A line without CRLF is cut off at MaxLineBytes: the reader neither reads
// nor keeps much more than that.
func TestLongLineBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  io.Reader
	}{
		{"1MB without CRLF", strings.NewReader("a1 LOGIN " + strings.Repeat("a", 1<<20))},
		{"endless", io.MultiReader(strings.NewReader("a1 LOGIN "), endless{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &countingReader{r: tc.src}
			r := NewReader(bufio.NewReader(src), nil)
			var (
				cmd *Command
				err error
			)
			alloc := allocated(func() { cmd, err = r.ReadCommand() })
			var perr *Error
			if cmd != nil || !errors.As(err, &perr) || *perr != (Error{Tag: "a1", Text: textLineTooLong, Fatal: true}) {
				t.Fatalf("got %v, %v; want fatal line too long", cmd, err)
			}
			if limit := MaxLineBytes + 4096; src.n > limit {
				t.Errorf("read %d bytes from the connection, want at most %d", src.n, limit)
			}
			if alloc > 64<<10 {
				t.Errorf("allocated %d bytes for a rejected line", alloc)
			}
		})
	}
}

// A literal's declared size allocates nothing: {4294967295} is refused
// before the continuation request and before any buffer is made for it.
func TestHugeLiteralDoesNotAllocate(t *testing.T) {
	for _, line := range []string{"a1 LOGIN {4294967295}\r\n", "a1 LOGIN {4294967295+}\r\n", "a1 LOGIN {9999999999}\r\n"} {
		src := strings.NewReader(line)
		br := bufio.NewReader(src)
		conts := 0
		r := NewReader(br, func() error { conts++; return nil })
		var perr *Error
		read := func() {
			src.Reset(line)
			br.Reset(src)
			if _, err := r.ReadCommand(); !errors.As(err, &perr) || perr.Text != textLiteralTooBig {
				t.Fatalf("%q: got %v", line, err)
			}
		}
		read() // grow the line buffer once
		if allocs := testing.AllocsPerRun(100, read); allocs > 4 {
			t.Errorf("%q: %v allocations per command", line, allocs)
		}
		if alloc := allocated(func() {
			for range 100 {
				read()
			}
		}); alloc > 64<<10 {
			t.Errorf("%q: allocated %d bytes for 100 commands", line, alloc)
		}
		if conts != 0 {
			t.Errorf("%q: sent %d continuation requests", line, conts)
		}
	}
}

// Over a real connection: the continuation request is sent only once the size
// is accepted, the client waits for it, and a refused synchronizing literal
// leaves the connection usable.
func TestSynchronizingLiteralOverPipe(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	done := make(chan error, 1)
	go func() {
		defer server.Close()
		r := NewReader(bufio.NewReader(server), func() error {
			_, err := io.WriteString(server, ContinuationRequest)
			return err
		})
		for {
			cmd, err := r.ReadCommand()
			var perr *Error
			switch {
			case errors.As(err, &perr):
				_, err = io.WriteString(server, perr.Tag+" BAD "+perr.Text+"\r\n")
			case err == nil:
				reply := cmd.Tag + " OK " + cmd.Name
				for _, a := range cmd.Args {
					reply += " [" + a.Value + "]"
				}
				_, err = io.WriteString(server, reply+"\r\n")
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	cr := bufio.NewReader(client)
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(client, s); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want string) {
		t.Helper()
		got, err := cr.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("S: %q, %v; want %q", got, err, want)
		}
	}
	send("a1 LOGIN {5}\r\n")
	expect(ContinuationRequest)
	send("alice {2}\r\n")
	expect(ContinuationRequest)
	send("pw\r\n")
	expect("a1 OK LOGIN [alice] [pw]\r\n")
	send("a2 LOGIN {9000}\r\n")
	expect("a2 BAD Literal too large\r\n")
	send("a3 LOGIN {3+}\r\nbob x\r\n")
	expect("a3 OK LOGIN [bob] [x]\r\n")
	client.Close()
	if err := <-done; !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("server ended with %v", err)
	}
}
