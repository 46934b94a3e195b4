package portal

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
)

// pageSet holds one language's parsed pages, by name.
type pageSet map[string]*template.Template

// pageNames are the templates in templates/, each rendered inside
// layout.html.
var pageNames = []string{"signin", "account", "enroll", "codes", "passcode", "message"}

// langCookie remembers the language picked with ?lang=.
const langCookie = "lang"

// view is what a page template sees. Fields a page does not use stay
// zero.
type view struct {
	// Lang is the page's language, "en" or "ja".
	Lang string
	// Path is the page's own address, for the language links.
	Path string
	// Title is the page title, translated.
	Title string
	// Issuer names the service.
	Issuer string
	// CSRF is the session's token for the page's forms.
	CSRF string
	// SignedIn shows the sign-out button.
	SignedIn bool
	// User is the signed-in user, or the name typed on the sign-in form.
	User string
	// Error and Notice are a message at the top of the page, translated.
	Error, Notice string

	// Key is the TOTP key being enrolled, grouped.
	Key string
	// Codes are new one-time codes.
	Codes []string
	// App and Passcode are a new app passcode, grouped.
	App, Passcode string
	// Account is the account page's 2FA state and passcodes.
	Account accountView
	// Enroll is the enrollment page's mode and the apps that will need
	// a passcode.
	Enroll enrollView
	// Settings are the mail client settings.
	Settings settingsView
	// Message is the text of a message page.
	Message string
}

// parsePages parses every page for every language, each language's with
// its own "t" (translate) and "tf" (translate and format) functions. An
// unknown key fails the page's rendering, and the tests render them all.
func parsePages() (map[string]pageSet, error) {
	out := map[string]pageSet{}
	for _, lang := range languages {
		cat := catalogs[lang]
		funcs := template.FuncMap{
			"t": func(key string) (string, error) {
				if m, ok := cat[key]; ok {
					return m, nil
				}
				return "", fmt.Errorf("no %s message %q", lang, key)
			},
			"tf": func(key string, args ...any) (string, error) {
				if m, ok := cat[key]; ok {
					return fmt.Sprintf(m, args...), nil
				}
				return "", fmt.Errorf("no %s message %q", lang, key)
			},
		}
		set := pageSet{}
		for _, name := range pageNames {
			t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
			if err != nil {
				return nil, fmt.Errorf("portal: templates: %w", err)
			}
			set[name] = t
		}
		out[lang] = set
	}
	return out, nil
}

// render writes page with status. v's Lang, Issuer and (when empty) Path
// and Title are filled in here.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page, titleKey string, v view) {
	v.Lang = requestLang(r)
	v.Issuer = s.opts.Issuer
	if v.Path == "" {
		v.Path = "/"
		if r.Method == http.MethodGet {
			v.Path = r.URL.Path
		}
	}
	v.Title = msg(v.Lang, titleKey)
	var buf bytes.Buffer
	if err := s.pages[v.Lang][page].ExecuteTemplate(&buf, "layout", v); err != nil {
		s.log.Error("rendering a page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// message renders a page of one title and one sentence, with a link to
// the start.
func (s *Server) message(w http.ResponseWriter, r *http.Request, status int, titleKey, textKey string) {
	s.render(w, r, status, "message", titleKey, view{Message: msg(requestLang(r), textKey)})
}

// requestLang picks the page language: ?lang=, then the lang cookie, then
// Accept-Language, then English.
func requestLang(r *http.Request) string {
	if l := r.URL.Query().Get("lang"); supported(l) {
		return l
	}
	if c, err := r.Cookie(langCookie); err == nil && supported(c.Value) {
		return c.Value
	}
	return acceptLanguage(r.Header.Get("Accept-Language"))
}

// rememberLang sets the lang cookie when a GET carries ?lang=.
func rememberLang(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		return
	}
	if l := r.URL.Query().Get("lang"); supported(l) {
		http.SetCookie(w, &http.Cookie{Name: langCookie, Value: l, Path: "/", MaxAge: 365 * 24 * 3600,
			HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	}
}

// acceptLanguage returns the supported language the header prefers most
// (RFC 9110 §12.5.4: quality values, then order), or English.
func acceptLanguage(header string) string {
	best, bestQ := defaultLang, -1.0
	for part := range strings.SplitSeq(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		primary, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		if !supported(primary) {
			continue
		}
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				continue
			}
			q = f
		}
		if q > bestQ && q > 0 {
			best, bestQ = primary, q
		}
	}
	return best
}
