package docs

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ConfigPackage is the import path of the package documented by
// ConfigReference.
const ConfigPackage = "github.com/kanmon-mail/kanmon/config"

// ConfigReference renders the Markdown configuration reference from the Go
// sources of package config in dir (test files excluded). It walks the
// Config struct and the structs it contains, and for every field with a
// toml tag emits the key path, its type, its default (taken from the
// "Default ..." sentence of the field's doc comment) and the rest of the
// doc comment, with Go field names replaced by their keys.
func ConfigReference(dir string) ([]byte, error) {
	fset := token.NewFileSet()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no Go files", dir)
	}
	pkg, err := doc.NewFromFiles(fset, files, ConfigPackage)
	if err != nil {
		return nil, err
	}
	g := &generator{structs: map[string]*ast.StructType{}, typeDocs: map[string]string{}, keys: map[string]string{}}
	for _, t := range pkg.Types {
		g.typeDocs[t.Name] = oneLine(t.Doc)
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok {
					g.structs[ts.Name.Name] = st
					for _, fld := range st.Fields.List {
						for _, name := range fld.Names {
							if key := tomlKey(fld); key != "" {
								g.keys[name.Name] = key
							}
						}
					}
				}
			}
			return true
		})
	}
	if g.structs["Config"] == nil {
		return nil, fmt.Errorf("%s: no type Config struct", dir)
	}
	g.walk("Config", "", "Top level", "")
	return g.render(), nil
}

type generator struct {
	structs  map[string]*ast.StructType
	typeDocs map[string]string
	keys     map[string]string // Go field name → toml key, for descriptions
	sections []section
}

type section struct {
	title, doc string
	rows       []row
}

type row struct{ key, typ, def, desc string }

// field is one toml key of a struct. Fields declared right after a
// documented field, without a doc comment of their own, share its comment
// and form a group with it (PrefixV4Bits and PrefixV6Bits).
type field struct {
	goName, key string
	typ         ast.Expr
	doc         string
	group       []string // Go names sharing doc, in order
}

// sub is a struct-typed key to document in a section of its own: one
// struct type, under one or more sibling keys (imap, pop3, submission).
type sub struct {
	typeName, parentKey string
	keys                []string
	array               bool
}

func (g *generator) fields(st *ast.StructType) []field {
	var out []field
	var gids []int
	doc, gid := "", 0
	for _, f := range st.Fields.List {
		if f.Doc != nil {
			doc, gid = oneLine(f.Doc.Text()), gid+1
		}
		key := tomlKey(f)
		for _, name := range f.Names {
			if key != "" && name.IsExported() {
				out = append(out, field{goName: name.Name, key: key, typ: f.Type, doc: doc})
				gids = append(gids, gid)
			}
		}
	}
	for i := range out {
		for j := range out {
			if gids[i] == gids[j] {
				out[i].group = append(out[i].group, out[j].goName)
			}
		}
	}
	return out
}

// walk documents the struct typeName in a section titled title, and then,
// depth first, the struct-typed keys it contains.
func (g *generator) walk(typeName, prefix, title, secDoc string) {
	sec := section{title: title, doc: secDoc}
	var subs []*sub
	fs := g.fields(g.structs[typeName])
	for _, f := range fs {
		elem, array, isStruct := g.structType(f.typ)
		desc, def := g.describe(f, fs)
		switch {
		case isStruct:
			var s *sub
			for _, o := range subs {
				if o.typeName == elem && !array && !o.array {
					s = o
				}
			}
			if s == nil {
				s = &sub{typeName: elem, array: array, parentKey: prefix}
				subs = append(subs, s)
			}
			s.keys = append(s.keys, f.key)
			header, typ := "["+prefix+f.key+"]", "table"
			if array {
				header, typ = "[["+prefix+f.key+"]]", "array of tables"
			}
			sec.rows = append(sec.rows, row{key: header, typ: typ, def: def, desc: desc})
		default:
			sec.rows = append(sec.rows, row{key: prefix + f.key, typ: g.typeName(f.typ), def: def, desc: desc})
		}
	}
	g.sections = append(g.sections, sec)
	for _, s := range subs {
		var headers []string
		for _, k := range s.keys {
			if s.array {
				headers = append(headers, "`[["+s.parentKey+k+"]]`")
			} else {
				headers = append(headers, "`["+s.parentKey+k+"]`")
			}
		}
		p := s.parentKey + s.keys[0] + "."
		switch {
		case s.array:
			p = s.parentKey + s.keys[0] + "[]."
		case len(s.keys) > 1:
			p = s.parentKey + "*."
		}
		g.walk(s.typeName, p, strings.Join(headers, ", "), g.typeDoc(s.typeName, strings.Join(headers, ", ")))
	}
}

// typeDoc is the doc comment of a struct type, its leading type name
// replaced by the table it describes ("Lockout is the [lockout] section."
// says nothing the heading does not).
func (g *generator) typeDoc(name, header string) string {
	d := g.typeDocs[name]
	if m := regexp.MustCompile(`^\w+ is the \[[^\]]+\] section\. `).FindString(d); m != "" {
		d = d[len(m):]
	} else if rest, ok := strings.CutPrefix(d, name+" "); ok {
		d = "The " + header + " table " + rest
	}
	return g.replaceNames(d, "")
}

// structType reports whether e is (a pointer to, or a slice of) a struct
// with toml keys of its own, and which.
func (g *generator) structType(e ast.Expr) (name string, array, ok bool) {
	switch t := e.(type) {
	case *ast.StarExpr:
		return g.structType(t.X)
	case *ast.ArrayType:
		name, _, ok = g.structType(t.Elt)
		return name, true, ok
	case *ast.Ident:
		st := g.structs[t.Name]
		if st == nil {
			return "", false, false
		}
		for _, f := range st.Fields.List {
			if tomlKey(f) != "" {
				return t.Name, false, true
			}
		}
	}
	return "", false, false
}

func (g *generator) typeName(e ast.Expr) string {
	switch types.ExprString(e) {
	case "string":
		return "string"
	case "[]string":
		return "array of strings"
	case "bool", "*bool":
		return "boolean"
	case "int", "*int", "int64", "uint32":
		return "integer"
	case "Duration":
		return "duration"
	}
	return types.ExprString(e)
}

var (
	defaultRE = regexp.MustCompile(`^(?:\w+: )?[Dd]efaults?:? (.+?)\.?$`)
	pairRE    = regexp.MustCompile(`^(\S+) and (\S+)$`)
	// goAPIRE finds sentences about the Go API ("After Load the path is
	// absolute."), which say nothing to someone writing the file.
	goAPIRE = regexp.MustCompile(`\bLoad\b`)
)

// describe splits a field's doc into its description and its default.
func (g *generator) describe(f field, siblings []field) (desc, def string) {
	var keep []string
	for _, s := range sentences(f.doc) {
		if m := defaultRE.FindStringSubmatch(s); m != nil {
			def = m[1]
			if p := pairRE.FindStringSubmatch(def); p != nil && len(f.group) == 2 {
				def = p[1+slices.Index(f.group, f.goName)]
			}
			continue
		}
		if s == "Required." {
			def = "required"
			continue
		}
		if goAPIRE.MatchString(s) {
			continue
		}
		keep = append(keep, s)
	}
	desc = strings.Join(keep, " ")
	// The later fields of a group point to the first, which explains them.
	if len(f.group) > 1 && f.group[0] != f.goName {
		desc = "See `" + g.keys[f.group[0]] + "`."
	}
	// "FailureMemory: how long that count is kept." reads better as
	// "How long that count is kept."
	for _, n := range f.group {
		if rest, ok := strings.CutPrefix(desc, n+": "); ok {
			desc = upperFirst(rest)
		}
	}
	if desc == "" || desc == f.goName+":" {
		desc = ""
		for _, o := range siblings {
			if o.goName != f.goName && !slices.Contains(f.group, o.goName) &&
				regexp.MustCompile(`\b`+f.goName+`\b`).MatchString(o.doc) {
				desc = "See `" + o.key + "`."
				break
			}
		}
	}
	// A default that is a value to write is code: `15s`, `720h` (30 days),
	// and `none` for a string key, where none is a value (tls = "none").
	// Prose is not: "required", "none" for a list, "the system roots".
	value, note, _ := strings.Cut(def, " (")
	if value != "" && !strings.Contains(value, " ") && value != "required" &&
		(value != "none" || g.typeName(f.typ) == "string") &&
		(note == "" || strings.HasSuffix(note, ")") && !strings.Contains(note, "(")) {
		def = "`" + value + "`"
		if note != "" {
			def += " (" + note
		}
	}
	return g.replaceNames(desc, f.goName), g.replaceNames(def, f.goName)
}

// proseNames are field names that are also names of things in the prose
// ("Redis (or a Redis Sentinel set)"): never replaced.
var proseNames = map[string]bool{"Redis": true}

// replaceNames writes Go field names as their toml keys: "within
// AccountIPWindow" becomes "within `account_ip_window`". A name without
// lower-case letters (TLS, IMAP) is also a word of the prose ("dial, TLS
// and login"), so it is replaced only where it starts the doc of its own
// field (own).
func (g *generator) replaceNames(s, own string) string {
	if own != "" && strings.ToUpper(own) == own {
		if rest, ok := strings.CutPrefix(s, own+" "); ok {
			s = "`" + g.keys[own] + "` " + rest
		}
	}
	var names []string
	for n := range g.keys {
		if strings.ToUpper(n) != n && !proseNames[n] {
			names = append(names, regexp.QuoteMeta(n))
		}
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	re := regexp.MustCompile(`\b(?:` + strings.Join(names, "|") + `)\b`)
	return re.ReplaceAllStringFunc(s, func(n string) string { return "`" + g.keys[n] + "`" })
}

func (g *generator) render() []byte {
	var b bytes.Buffer
	b.WriteString(`<!-- Code generated by "go generate ./docs/..." from config/*.go; DO NOT EDIT. -->

# kanmon configuration reference

kanmon reads one TOML file, given with ` + "`-config FILE`" + `. Relative paths
in it are relative to the directory of that file. An unknown key or a bad
value is an error that names the file and line; ` + "`kanmon check -config FILE`" + `
checks a file without starting anything. Sample files are in
[contrib/config](../contrib/config/). A duration is written as a string in
Go's syntax: "90s", "31m", "1h", "720h".

This page is generated from the doc comments of the config structs
(config/*.go) by ` + "`go generate ./docs/...`" + `.
To change it, change those comments and regenerate.
`)
	for _, s := range g.sections {
		fmt.Fprintf(&b, "\n## %s\n\n", s.title)
		if s.doc != "" {
			b.WriteString(wrap(s.doc, 76) + "\n\n")
		}
		b.WriteString("| key | type | default | description |\n|---|---|---|---|\n")
		for _, r := range s.rows {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.key, cell(r.typ), cell(r.def), cell(r.desc))
		}
	}
	return b.Bytes()
}

// tomlKey is the key of a struct field's toml tag, or "" for none or "-".
func tomlKey(f *ast.Field) string {
	if f.Tag == nil {
		return ""
	}
	tag := reflect.StructTag(strings.Trim(f.Tag.Value, "`")).Get("toml")
	key, _, _ := strings.Cut(tag, ",")
	if key == "-" {
		return ""
	}
	return key
}

// sentences splits text after every ". ", so joining the parts with one
// space gives the text back.
func sentences(text string) []string {
	var out []string
	for {
		i := strings.Index(text, ". ")
		if i < 0 {
			break
		}
		out = append(out, text[:i+1])
		text = text[i+2:]
	}
	if text != "" {
		out = append(out, text)
	}
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func upperFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// wrap breaks text into lines of at most width bytes, between words.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(text) {
		if n > 0 && n+1+len(w) > width {
			b.WriteByte('\n')
			n = 0
		} else if n > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}
