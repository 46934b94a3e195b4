// Package docs holds kanmon's user documentation (the Markdown files in
// this directory) and the generator of its configuration reference.
//
// config.md is generated from the doc comments of the config structs in
// package config: run `go generate ./docs/...` after changing them.
// TestConfigReferenceUpToDate fails while it is out of date, and
// TestConfigDefaults while its default column says other than what an
// empty config gets.
//
// kanmon.8, the man page kanmon(8), is written by the hidden command
// `kanmon man` from the command list that `kanmon help` prints
// (cmd/kanmon/commands.go); the same `go generate ./docs/...` rewrites it,
// and cmd/kanmon's TestManPageUpToDate fails while it is out of date.
package docs

//go:generate go run ./gen -config ../config -o config.md
//go:generate go run ../cmd/kanmon man -o kanmon.8
