//go:build unix

package main

import (
	"fmt"
	"strings"
)

// report collects the Markdown the run prints at the end.
type report struct {
	machine string
	setup   []string
	login   []string
	fetch   []string
	idle    []string
	reload  []string
	notes   []string
}

func (r *report) addf(format string, args ...any) {
	r.setup = append(r.setup, fmt.Sprintf(format, args...))
}

func (r *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## kanmon-bench report\n\nMachine: %s\n\n", r.machine)
	for _, l := range r.setup {
		b.WriteString(l + "\n")
	}
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n### %s\n\n", title)
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	section("Login rate", r.login)
	section("FETCH throughput", r.fetch)
	section("Idle memory", r.idle)
	section("Reload", r.reload)
	section("Notes", r.notes)
	return b.String()
}
