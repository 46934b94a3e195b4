package main

import (
	"runtime"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/buildinfo"
)

// kanmon version prints what internal/buildinfo reads, which for a test
// binary is at least the Go version that built it.
func TestVersion(t *testing.T) {
	out, _ := cliMust(t, 0, "version")
	bi := buildinfo.Read()
	if want := "kanmon " + bi.Version + "\ncommit " + bi.Commit + "\ngo     " + runtime.Version() + "\n"; out != want {
		t.Errorf("kanmon version:\n%s\nwant:\n%s", out, want)
	}
	cliMust(t, 2, "version", "extra")
}
