// Command gen writes kanmon's configuration reference (docs/config.md)
// from the doc comments of the config structs. It runs from
// `go generate ./docs/...`:
//
//	go run ./gen -config ../config -o config.md
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kanmon-mail/kanmon/docs"
)

func main() {
	dir := flag.String("config", "../config", "`DIR` of package config's sources")
	out := flag.String("o", "config.md", "output `FILE`")
	flag.Parse()
	b, err := docs.ConfigReference(*dir)
	if err == nil {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
