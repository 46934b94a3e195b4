package main

import (
	"fmt"
	"io"

	"github.com/kanmon-mail/kanmon/internal/buildinfo"
)

// runVersion implements "kanmon version": the version, the commit and the
// Go version, one a line, as internal/buildinfo reads them (the same as
// the labels of kanmon_build_info).
func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "usage: kanmon version")
		return 2
	}
	bi := buildinfo.Read()
	fmt.Fprintf(stdout, "kanmon %s\ncommit %s\ngo     %s\n", bi.Version, bi.Commit, bi.GoVersion)
	return 0
}
