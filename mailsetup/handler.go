package mailsetup

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
)

// Paths the apps ask.
const (
	// AutoconfigPath is where Thunderbird asks https://autoconfig.<domain>.
	AutoconfigPath = "/mail/config-v1.1.xml"
	// WellKnownAutoconfigPath is where Thunderbird asks https://<domain>.
	WellKnownAutoconfigPath = "/.well-known/autoconfig/mail/config-v1.1.xml"
	// AutodiscoverPath is where Outlook posts, at https://<domain> and
	// https://autodiscover.<domain>; matched without regard to case, as
	// Outlook writes it "/Autodiscover/Autodiscover.xml" and Thunderbird
	// "/autodiscover/autodiscover.xml".
	AutodiscoverPath = "/autodiscover/autodiscover.xml"
)

// Response headers.
const (
	// ContentTypeXML is sent with every document; Thunderbird parses
	// text/xml and application/xml alike.
	ContentTypeXML = "application/xml; charset=utf-8"
	// autoconfigCacheControl lets browsers and proxies keep the public
	// autoconfig file for a short while: a change of listeners shows
	// within minutes.
	autoconfigCacheControl = "public, max-age=300"
	// autodiscoverCacheControl: the answer echoes the address, so it is
	// never stored.
	autodiscoverCacheControl = "no-store"
)

// emailAddressParam is the query parameter Thunderbird appends to the
// autoconfig URL. Its value is not used, only bounded.
const emailAddressParam = "emailaddress"

// NewHandler serves the public setup documents, without authentication:
//
//	GET|HEAD AutoconfigPath, WellKnownAutoconfigPath  ClientConfig
//	POST     AutodiscoverPath (any case)              Autodiscover
//
// settings gives the Settings for each request (it may use r.Host); log
// gets one line per refused request (nil discards them). A malformed,
// oversized or unsupported autodiscover request is answered 400 with a
// short plain-text reason, never internal text; a method other than the
// above 405 with Allow; another path 404. When the Settings cannot make a
// document (no listener with TLS), the answer is 404, so apps go on to
// their next way of finding settings. An Authorization header, which
// Thunderbird and Outlook may send to autodiscover, is ignored.
func NewHandler(settings func(r *http.Request) Settings, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{settings: settings, log: log}
}

type handler struct {
	settings func(r *http.Request) Settings
	log      *slog.Logger
}

// ServeHTTP routes by path, then method.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == AutoconfigPath || r.URL.Path == WellKnownAutoconfigPath:
		h.autoconfig(w, r)
	case strings.EqualFold(r.URL.Path, AutodiscoverPath):
		h.autodiscover(w, r)
	default:
		plainError(w, http.StatusNotFound, "not found")
	}
}

// autoconfig serves ClientConfig.
func (h *handler) autoconfig(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		plainError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	for _, v := range r.URL.Query()[emailAddressParam] {
		if len(v) > MaxAddressLength {
			h.log.Debug("mailsetup: autoconfig refused", "reason", "emailaddress too long", "length", len(v))
			plainError(w, http.StatusBadRequest, "emailaddress too long")
			return
		}
	}
	s := h.settings(r)
	body, err := ClientConfig(s)
	if err != nil {
		h.log.Warn("mailsetup: no autoconfig to serve", "host", s.Host, "err", err)
		plainError(w, http.StatusNotFound, "no mail settings")
		return
	}
	w.Header().Set("Cache-Control", autoconfigCacheControl)
	writeXML(w, r, body)
}

// autodiscover serves Autodiscover.
func (h *handler) autodiscover(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		plainError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	w.Header().Set("Cache-Control", autodiscoverCacheControl)
	email, err := ParseAutodiscoverRequest(http.MaxBytesReader(w, r.Body, MaxAutodiscoverRequest))
	if err != nil {
		text := ErrMalformedRequest.Error()
		var re *RequestError
		if errors.As(err, &re) {
			text = re.ClientText()
		}
		h.log.Debug("mailsetup: autodiscover refused", "remote", r.RemoteAddr, "err", err)
		plainError(w, http.StatusBadRequest, text)
		return
	}
	s := h.settings(r)
	body, err := Autodiscover(s, email)
	if err != nil {
		h.log.Warn("mailsetup: no autodiscover to serve", "host", s.Host, "err", err)
		plainError(w, http.StatusNotFound, "no mail settings")
		return
	}
	writeXML(w, r, body)
}

// writeXML sends an XML document with 200.
func writeXML(w http.ResponseWriter, r *http.Request, body []byte) {
	w.Header().Set("Content-Type", ContentTypeXML)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body) // the client went away; nothing to do
	}
}

// plainError sends a short, fixed plain-text answer.
func plainError(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text + "\n")) // the client went away; nothing to do
}
