//go:build unix

package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Logs are where a server writes in its directory Dir, which Launch also
// runs it in: Output takes its stdout and stderr, File is its own log file
// ("": none).
type Logs struct {
	Dir, Output, File string
	// Perm is the mode of the files when Launch creates them.
	Perm os.FileMode
	// Keep makes Launch append to the files rather than empty them, so
	// that they hold every run; a package marks where a run begins with
	// Append. Only this run's part counts when Launch looks for a taken
	// port.
	Keep bool
}

// names are the files of l that there are.
func (l Logs) names() []string {
	var names []string
	for _, name := range []string{l.Output, l.File} {
		if name != "" {
			names = append(names, name)
		}
	}
	return names
}

// String returns the output and the log file one after the other, for
// printing when a test fails. Each ends in a line break; a missing or empty
// file is left out.
func (l Logs) String() string {
	return l.since(nil)
}

// since is String of what the files hold from the offsets on (nil: from
// the start), as sizes returned them.
func (l Logs) since(offsets map[string]int64) string {
	var b strings.Builder
	for _, name := range l.names() {
		data, err := os.ReadFile(filepath.Join(l.Dir, name))
		if off := offsets[name]; err == nil && off <= int64(len(data)) {
			data = data[off:]
		}
		if err != nil || len(data) == 0 {
			continue
		}
		b.Write(data)
		if data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// sizes returns how long the files are now.
func (l Logs) sizes() map[string]int64 {
	m := map[string]int64{}
	for _, name := range l.names() {
		if fi, err := os.Stat(filepath.Join(l.Dir, name)); err == nil {
			m[name] = fi.Size()
		}
	}
	return m
}

// Append appends text to Output, which it creates when missing, for
// instance a line that marks the start of a run in Keep logs.
func (l Logs) Append(text string) error {
	f, err := os.OpenFile(filepath.Join(l.Dir, l.Output), os.O_WRONLY|os.O_CREATE|os.O_APPEND, l.Perm)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}

// reset empties (or creates) the files, so that they hold only the run
// about to start; with Keep it only creates the missing ones.
func (l Logs) reset() error {
	flag := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if l.Keep {
		flag = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	for _, name := range l.names() {
		f, err := os.OpenFile(filepath.Join(l.Dir, name), flag, l.Perm)
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

// FailureLog shows a server's log once when a test fails: in the failure
// message, or else at the cleanup. The zero FailureLog has shown nothing. It
// is safe for concurrent use.
type FailureLog struct {
	mu    sync.Mutex
	shown bool
}

// Shown returns log, for a failure message, and spares Cleanup from
// printing it again.
func (f *FailureLog) Shown(log string) string {
	f.mu.Lock()
	f.shown = true
	f.mu.Unlock()
	return log
}

// Cleanup logs "title:" and log(), for a cleanup to call, when the test has
// failed and no failure message has shown the log.
func (f *FailureLog) Cleanup(t testing.TB, title string, log func() string) {
	f.mu.Lock()
	shown := f.shown
	f.mu.Unlock()
	if t.Failed() && !shown {
		t.Logf("%s:\n%s", title, log())
	}
}
