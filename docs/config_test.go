package docs_test

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/docs"
)

// TestConfigReferenceUpToDate regenerates config.md from config/*.go and
// fails if the checked-in file differs.
func TestConfigReferenceUpToDate(t *testing.T) {
	want, err := docs.ConfigReference("../config")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("config.md")
	if err != nil {
		t.Fatalf("%v: run `go generate ./docs/...`", err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		g, w := "", ""
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("docs/config.md is out of date: run `go generate ./docs/...`\nconfig.md:%d:\n  have: %s\n  want: %s", i+1, g, w)
		}
	}
}

// TestConfigReferenceHasEveryKey checks the generated reference against
// the decoder's view of the config: every toml key reachable from
// config.Config, found by reflection rather than by parsing the sources,
// has a row.
func TestConfigReferenceHasEveryKey(t *testing.T) {
	ref, err := docs.ConfigReference("../config")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	tomlKeys(reflect.TypeFor[config.Config](), "", &keys)
	if len(keys) < 30 {
		t.Fatalf("found only %d keys by reflection: %q", len(keys), keys)
	}
	for _, k := range keys {
		if !bytes.Contains(ref, []byte("| `"+k+"` |")) {
			t.Errorf("config reference has no row for %s", k)
		}
	}
}

// tomlKeys appends the key paths of t's toml fields in the generator's
// notation: "tls.cert", "[tls]", "listener[].tls", "[[listener]]", and
// "backend.*.address" when sibling keys share one struct type.
func tomlKeys(t reflect.Type, prefix string, out *[]string) {
	count := map[reflect.Type]int{}
	for f := range t.Fields() {
		if _, st := table(f.Type); st != nil {
			count[st]++
		}
	}
	seen := map[reflect.Type]bool{}
	for f := range t.Fields() {
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		slice, st := table(f.Type)
		switch {
		case st == nil:
			*out = append(*out, prefix+key)
		case slice:
			*out = append(*out, "[["+prefix+key+"]]")
			tomlKeys(st, prefix+key+"[].", out)
		default:
			*out = append(*out, "["+prefix+key+"]")
			sub := prefix + key + "."
			if count[st] > 1 {
				sub = prefix + "*."
			}
			if !seen[st] {
				seen[st] = true
				tomlKeys(st, sub, out)
			}
		}
	}
}

// table reports whether t (or what it points to, or its elements) is a
// struct with toml keys: a TOML table rather than a value.
func table(t reflect.Type) (slice bool, st reflect.Type) {
	switch t.Kind() {
	case reflect.Pointer:
		return table(t.Elem())
	case reflect.Slice:
		_, st = table(t.Elem())
		return true, st
	case reflect.Struct:
		for f := range t.Fields() {
			if k := f.Tag.Get("toml"); k != "" && k != "-" {
				return false, t
			}
		}
	}
	return false, nil
}
