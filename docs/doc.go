// Package docs holds kanmon's user documentation (the Markdown files in
// this directory) and the generator of its configuration reference.
//
// config.md is generated from the doc comments of the config structs in
// package config: run `go generate ./docs/...` after changing them.
// TestConfigReferenceUpToDate fails while it is out of date, and
// TestConfigDefaults while its default column says other than what an
// empty config gets.
package docs

//go:generate go run ./gen -config ../config -o config.md
