//go:build unix

package testenv

import (
	"os"
	"path/filepath"
	"strings"
)

// Logs are where a server writes in its directory Dir, which Launch also
// runs it in: Output takes its stdout and stderr, File is its own log file.
type Logs struct {
	Dir, Output, File string
	// Perm is the mode of the files when Launch creates them.
	Perm os.FileMode
}

// String returns the output and the log file one after the other, for
// printing when a test fails. Each ends in a line break; a missing or empty
// file is left out.
func (l Logs) String() string {
	var b strings.Builder
	for _, name := range []string{l.Output, l.File} {
		data, err := os.ReadFile(filepath.Join(l.Dir, name))
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

// reset empties (or creates) the files, so that they hold only the run
// about to start.
func (l Logs) reset() error {
	for _, name := range []string{l.Output, l.File} {
		if err := os.WriteFile(filepath.Join(l.Dir, name), nil, l.Perm); err != nil {
			return err
		}
	}
	return nil
}
