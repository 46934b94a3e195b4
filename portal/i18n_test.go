package portal

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCatalog checks the message catalog: no key twice, no text empty,
// the same format verbs in both languages, and every key the templates
// and the handlers use is there.
func TestCatalog(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range slices.Concat(messages, deviceMessages) {
		if seen[e.key] {
			t.Errorf("key %q twice", e.key)
		}
		seen[e.key] = true
		if e.en == "" || e.ja == "" {
			t.Errorf("key %q: an empty text", e.key)
		}
		if !slices.Equal(formatArgs(e.en), formatArgs(e.ja)) {
			t.Errorf("key %q: format verbs differ between en %q and ja %q", e.key, e.en, e.ja)
		}
	}
	used := map[string]bool{}
	tmpl := regexp.MustCompile(`\{\{-?\s*tf? "([^"]+)"`)
	files, _ := filepath.Glob("templates/*.html")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tmpl.FindAllStringSubmatch(string(data), -1) {
			used[m[1]] = true
		}
	}
	// In Go code, keys are the string literals shaped "word.word".
	lit := regexp.MustCompile(`"([a-z]+\.[a-z_0-9]+)"`)
	gofiles, _ := filepath.Glob("*.go")
	for _, f := range gofiles {
		if strings.HasSuffix(f, "_test.go") || f == "i18n.go" || f == "i18n_devices.go" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range lit.FindAllStringSubmatch(string(data), -1) {
			if ext := filepath.Ext(m[1]); ext != ".html" && ext != ".css" && ext != ".png" {
				used[m[1]] = true
			}
		}
	}
	if len(used) < 60 {
		t.Fatalf("found only %d keys in use", len(used))
	}
	for k := range used {
		if !seen[k] {
			t.Errorf("key %q is used but not in the catalog", k)
		}
	}
	for k := range seen {
		if !used[k] {
			t.Errorf("key %q is in the catalog but never used", k)
		}
	}
}

// TestAcceptLanguage checks the choice of language from the header.
func TestAcceptLanguage(t *testing.T) {
	for header, want := range map[string]string{
		"":                         "en",
		"ja":                       "ja",
		"ja-JP,ja;q=0.9,en;q=0.8":  "ja",
		"en-US,en;q=0.9,ja;q=0.8":  "en",
		"fr, ja;q=0.5, en;q=0.4":   "ja",
		"fr, de":                   "en",
		"ja;q=0, en":               "en",
		"ja;q=bogus, en;q=0.1":     "en",
		"zh-TW, ja;q=0.2":          "ja",
		"JA-jp":                    "ja",
		"en;q=0.5, ja;q=0.5":       "en",
		strings.Repeat("x,", 1000): "en",
	} {
		if got := acceptLanguage(header); got != want {
			t.Errorf("acceptLanguage(%q) = %q, want %q", header, got, want)
		}
	}
}

// TestMessagePagesBothLanguages renders the message pages, which the
// journeys rarely reach, in both languages.
func TestMessagePagesBothLanguages(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{pages: pages, log: discardLogger()}
	for _, lang := range languages {
		for _, kind := range []string{"notfound", "forbidden", "unavailable", "badrequest"} {
			rec := httptest.NewRecorder()
			s.message(rec, httptest.NewRequest("GET", "/x?lang="+lang, nil), 400, kind+".title", kind+".text")
			if body := rec.Body.String(); rec.Code != 400 || !strings.Contains(body, `<html lang="`+lang+`">`) ||
				!strings.Contains(body, msg(lang, kind+".text")) {
				t.Errorf("%s %s: %d\n%s", lang, kind, rec.Code, body)
			}
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// formatArgs lists the verbs of a format by the argument each formats
// ("1s", "2d"), in argument order: a translation may put the arguments
// in another order (%[3]s) but must format the same ones the same way.
func formatArgs(format string) []string {
	verb := regexp.MustCompile(`%(?:\[(\d+)\])?([sd])`)
	var out []string
	next := 1
	for _, m := range verb.FindAllStringSubmatch(format, -1) {
		n := next
		if m[1] != "" {
			n, _ = strconv.Atoi(m[1])
		}
		next = n + 1
		out = append(out, strconv.Itoa(n)+m[2])
	}
	slices.Sort(out)
	return out
}
