package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// manFile is the committed kanmon(8) that TestManPageUpToDate guards.
const manFile = "../../docs/kanmon.8"

// Every command of the list that `kanmon help` and kanmon(8) share is in
// both, and is one that run dispatches; the hidden man is in neither.
func TestHelpAndManListEveryCommand(t *testing.T) {
	help, _ := cliMust(t, 0, "help")
	page := manPage()
	for _, c := range commands {
		if !strings.Contains(help, "\n  "+c.name+" ") {
			t.Errorf("kanmon help lacks %q:\n%s", c.name, help)
		}
		if !strings.Contains(page, ".TP\n"+roffSynopsis("kanmon "+c.name)) {
			t.Errorf("kanmon(8) lacks %q", c.name)
		}
		_, _, errOut := cliRun(append(strings.Fields(c.name), "-h")...)
		if strings.Contains(errOut, "unknown command") {
			t.Errorf("kanmon %s -h: %s", c.name, errOut)
		}
	}
	if strings.Contains(help, " man ") || strings.Contains(page, `\fBman\fR`) {
		t.Error("the hidden command man is listed")
	}
	if _, errOut := cliMust(t, 2); errOut != help {
		t.Errorf("kanmon without a command: stderr %q, want the help", errOut)
	}
	if _, errOut := cliMust(t, 2, "frobnicate"); !strings.HasSuffix(errOut, help) {
		t.Errorf("kanmon frobnicate: stderr %q, want the help after the error", errOut)
	}
}

// TestManPageUpToDate regenerates kanmon(8) and fails when docs/kanmon.8
// differs, naming the first line that does.
func TestManPageUpToDate(t *testing.T) {
	have, err := os.ReadFile(manFile)
	if err != nil {
		t.Fatalf("%v: run `go generate ./docs/...`", err)
	}
	want, _ := cliMust(t, 0, "man")
	if string(have) == want {
		return
	}
	n := 0
	for n < min(len(have), len(want)) && have[n] == want[n] {
		n++
	}
	line := 1 + bytes.Count(have[:n], []byte("\n"))
	haveLine, _, _ := strings.Cut(string(have[bytes.LastIndexByte(have[:n], '\n')+1:]), "\n")
	wantLine, _, _ := strings.Cut(want[strings.LastIndexByte(want[:n], '\n')+1:], "\n")
	t.Fatalf("docs/kanmon.8 is out of date: run `go generate ./docs/...`\nkanmon.8:%d:\n  have: %s\n  want: %s", line, haveLine, wantLine)
}

// kanmon man -o writes the same page as kanmon man.
func TestManWritesFile(t *testing.T) {
	path := t.TempDir() + "/kanmon.8"
	cliMust(t, 0, "man", "-o", path)
	if b, err := os.ReadFile(path); err != nil || string(b) != manPage() {
		t.Errorf("kanmon man -o: %v, %d bytes, want the %d of manPage", err, len(b), len(manPage()))
	}
	cliMust(t, 2, "man", "extra")
}
