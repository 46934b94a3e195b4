package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyInfo is where a key path first appears and what kind of value it holds.
type keyInfo struct {
	line int
	kind unstable.Kind
}

// keyIndex maps every key path in a document to its line. A path is the
// dotted key, with [i] for the i-th element of an array or array of tables:
// "log_level", "tls.cert", "listener[1]", "listener[1].address",
// "trusted_networks[2]", "backend.imap", "backend.imap.master_user".
//
// go-toml reports positions for syntax, type and unknown-key errors; the
// checks made after decoding look their line up here by key path.
type keyIndex map[string]keyInfo

// indexKeys walks data with go-toml's parser. It stops quietly at a syntax
// error; the decoder reports that one.
func indexKeys(data []byte) keyIndex {
	x := indexer{keys: keyIndex{}, arrays: map[string]int{}}
	for i, b := range data {
		if b == '\n' {
			x.newlines = append(x.newlines, i)
		}
	}
	var p unstable.Parser
	p.Reset(data)
	table := "" // path of the current [table] or [[array table]] element
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table, _ = x.key("", e.Key(), unstable.Table)
		case unstable.ArrayTable:
			name, line := x.key("", e.Key(), unstable.ArrayTable)
			table = fmt.Sprintf("%s[%d]", name, x.arrays[name])
			x.arrays[name]++
			x.set(table, line, unstable.Table)
		case unstable.KeyValue:
			x.keyValue(table, e)
		}
	}
	return x.keys
}

type indexer struct {
	keys     keyIndex
	arrays   map[string]int // [[name]] headers seen so far
	newlines []int          // offsets of '\n' in the document
}

// line returns the 1-based line of a byte range.
func (x *indexer) line(r unstable.Range) int {
	return sort.SearchInts(x.newlines, int(r.Offset)) + 1
}

// set records path unless an earlier line already did.
func (x *indexer) set(path string, line int, kind unstable.Kind) {
	if _, ok := x.keys[path]; !ok {
		x.keys[path] = keyInfo{line, kind}
	}
}

// key records each prefix of the dotted key it (under parent) as a table
// and returns the full path and the line of the key's first part.
func (x *indexer) key(parent string, it unstable.Iterator, kind unstable.Kind) (string, int) {
	path, line := parent, 0
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = x.line(k.Raw)
		}
		path = joinPath(path, string(k.Data))
		if it.IsLast() {
			x.set(path, line, kind)
		} else {
			x.set(path, line, unstable.Table)
		}
	}
	return path, line
}

func (x *indexer) keyValue(table string, kv *unstable.Node) {
	v := kv.Value()
	path, line := x.key(table, kv.Key(), v.Kind)
	x.value(path, v, line)
}

// value records the elements of arrays and the keys of inline tables.
// line is where the value's key is, used for elements without a position
// of their own (nested arrays).
func (x *indexer) value(path string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); {
			e := it.Node()
			if e.Kind == unstable.Comment {
				continue
			}
			if e.Raw.Length > 0 {
				line = x.line(e.Raw)
			}
			elem := fmt.Sprintf("%s[%d]", path, i)
			x.set(elem, line, e.Kind)
			x.value(elem, e, line)
			i++
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if e := it.Node(); e.Kind == unstable.KeyValue {
				x.keyValue(path, e)
			}
		}
	}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// parentPath strips the last ".key" or "[i]": "listener[1].tls" becomes
// "listener[1]", then "listener", then "".
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

// Line returns the line of keyPath in the file c was parsed from. When the
// key itself is absent (a missing required key, a default), it returns the
// line of the nearest enclosing table or key that is present, and 0 when
// there is none. Paths are dotted keys with [i] for array elements:
// "idle_timeout", "listener[1].tls", "trusted_networks[0]", "backend.imap".
func (c *Config) Line(keyPath string) int {
	for keyPath != "" {
		if k, ok := c.keys[keyPath]; ok {
			return k.line
		}
		keyPath = parentPath(keyPath)
	}
	return 0
}

// errorAt formats "file:line: message", or "file: message" when line is 0.
func (c *Config) errorAt(line int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", c.File, line, msg)
	}
	return fmt.Errorf("%s: %s", c.File, msg)
}

// errorf is errorAt at the line of keyPath (see Line).
func (c *Config) errorf(keyPath string, format string, args ...any) error {
	return c.errorAt(c.Line(keyPath), format, args...)
}
