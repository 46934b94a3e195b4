// Package portal is kanmon's self-service web portal (issue 7): users sign
// in with their account password (checked by the mail backend) and, when
// 2FA is on, a code from their authenticator app or a one-time code; then
// they turn two-factor authentication on (TOTP enrollment with a key and a
// QR code, and one-time codes for a lost device), manage their own app
// passcodes, see their mail client settings, and turn 2FA off again.
//
// The pages are server-rendered html/template, embedded in the binary, in
// English and Japanese, and work without JavaScript and on a phone. The
// portal writes the same accounts file as the admin CLI (through package
// auth's locked, atomic Store), then runs the server's in-process reload,
// so a deleted passcode's live mail sessions end within a second.
//
// Web security: a server-side store of signed-in sessions, in memory or,
// for several nodes, sealed in Redis (Options.Sessions) (256-bit random
// ids; __Host-, HttpOnly, Secure, SameSite=Strict cookies; idle and
// absolute expiry; capped per user, and in memory in all, least recently
// used out first), a CSRF token on every POST (the sign-in
// form's is stateless: no memory is spent before a sign-in), HSTS, a
// strict CSP and no caching. Failed sign-ins count in the lockout
// counters that mail logins use, wait out the same tarpit and at least
// minFailureDelay, and all get one message.
package portal

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/mailsetup"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/proxy/backend"
)

//go:embed templates/*.html static/portal.css
var assets embed.FS

// Limits of the HTTP server. A portal form is a few short fields.
const (
	// maxBodyBytes caps a request body (http.MaxBytesReader).
	maxBodyBytes = 16 << 10
	// maxHeaderBytes caps the request line and headers.
	maxHeaderBytes = 16 << 10
	// readHeaderTimeout bounds reading the request headers.
	readHeaderTimeout = 10 * time.Second
	// readTimeout bounds reading a whole request.
	readTimeout = 30 * time.Second
	// writeTimeout bounds a whole exchange: a sign-in may wait for a
	// place among the password checks (maxCheckWait), then for the
	// backend (its timeout, 15s by default), and is answered no sooner
	// than the tarpit (up to tarpit_max, 8s by default) or
	// minFailureDelay, measured from the same start.
	writeTimeout = 60 * time.Second
	// idleTimeout closes idle keep-alive connections.
	idleTimeout = 60 * time.Second
	// shutdownTimeout bounds Shutdown's wait for requests in flight.
	shutdownTimeout = 5 * time.Second
	// qrSize is the QR code's width and height in pixels.
	qrSize = 256
	// maxPasscodesPerAccount caps the passcodes a user may create here.
	maxPasscodesPerAccount = 50
	// minFailureDelay is the least time a failed sign-in takes to be
	// answered, measured from the start of the attempt (the tarpit may
	// make it longer). It covers the backend's own delay before it
	// refuses a wrong password, Dovecot's default auth_failure_delay of
	// 2 s, plus a margin: without it, a wrong password (answered after
	// the backend's delay) and a right password with a wrong code
	// (answered after the tarpit alone) would differ in time, and the
	// time would tell that the password was right.
	minFailureDelay = 3 * time.Second
	// maxConcurrentChecks caps the password checks at the backend in
	// progress at once; a sign-in over the cap waits for a place.
	maxConcurrentChecks = 64
	// maxCheckWait bounds that wait (the client going away ends it
	// sooner); then the sign-in gets the "unavailable" page.
	maxCheckWait = 15 * time.Second
	// hstsHeader keeps browsers on HTTPS for a year.
	hstsHeader = "max-age=31536000"
)

// PasswordChecker checks user's account password at the mail backend on
// behalf of client (backend.Backend.CheckPassword): nil when accepted, an
// error wrapping backend.ErrPasswordRejected when the backend refused it,
// any other error when it could not tell.
type PasswordChecker func(ctx context.Context, user, password string, client backend.ClientInfo) error

// Generation is what the portal reads of the configuration generation in
// force: the configuration (accounts file, state_dir, listeners,
// require_2fa_outside) and the policy built from it (trusted_networks).
type Generation struct {
	Config *config.Config
	Policy *auth.Policy
}

// Options are the portal's dependencies, shared with the mail proxy.
type Options struct {
	// Log receives one line per sign-in and per change, never a secret.
	Log *slog.Logger
	// Generation returns the configuration generation in force (the
	// accounts file, state_dir, trusted_networks, the listeners); it is
	// called once per request, since a reload swaps it. Required.
	Generation func() Generation
	// Guard is the lockout guard that mail logins use. Required.
	Guard lockout.Enforcer
	// CheckPassword checks account passwords at the backend. Required.
	CheckPassword PasswordChecker
	// LastUse returns the last use of every passcode, by passcode ID, as
	// the admin socket reports it; nil shows no last use.
	LastUse func() (map[string]auth.LastUse, error)
	// RecordUse notes the use of an authenticator (by Authenticator.ID)
	// where the passcodes' last use is kept; nil records nothing.
	RecordUse func(id string, u auth.LastUse)
	// Clients are the records of the apps that present the account
	// password (auth.ClientKeeper): the account page shows those still
	// refused, the enrollment page those that will need a passcode. Nil
	// shows none.
	Clients auth.ClientKeeper
	// Reload is the server's in-process reload of the accounts file, run
	// after every change the portal makes to it. Required.
	Reload func() error
	// Certificate returns the certificate in force (the portal's own,
	// [tls]); the Apple profiles are signed with it. Nil: no profiles.
	Certificate func() *tls.Certificate
	// Issuer names the service in authenticator apps and on the pages.
	Issuer string
	// MailHost is the server name in the client settings; empty means
	// the host name the browser used to reach the portal.
	MailHost string
	// SessionIdle and SessionMax are a session's idle and absolute
	// lifetimes.
	SessionIdle, SessionMax time.Duration
	// Now is the clock for sessions and codes; nil means time.Now.
	Now func() time.Time
	// MinFailureDelay overrides minFailureDelay, the least time a failed
	// sign-in takes (zero: minFailureDelay). For tests.
	MinFailureDelay time.Duration
	// Sessions, when set, keeps the signed-in sessions where several
	// portal nodes share them (redisstate.PortalSessions: Redis), sealed
	// (see SharedSessions). While it does not answer, sign-ins and
	// signed-in pages get the "unavailable" page. Nil: this process's
	// memory, for one node.
	Sessions SharedSessions
	// Replay, when set, is the TOTP replay guard, shared by several
	// nodes so that a code used on one is refused on every other
	// (redisstate.TOTPReplay). While it cannot decide, codes are
	// refused. Nil: an otp.ReplayGuard in this process's memory.
	Replay otp.Replay
	// Accounts, when set, is the store of the accounts database
	// (auth.OpenSharedStore) that the portal reads and changes instead of
	// the accounts file. While the database does not answer, a change is
	// refused with the unavailable page.
	Accounts *auth.Store
}

// Server is the portal's http.Handler.
type Server struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	sessions sessionKeeper
	replay   otp.Replay
	tarpit   *tarpitCounter
	pages    map[string]pageSet // by language
	css      []byte
	mux      *http.ServeMux
	// formKey is the per-process key of the sign-in form's tokens.
	formKey [32]byte
	// minFailure is the least time a failed sign-in takes.
	minFailure time.Duration
	// checks holds a place per password check in progress.
	checks chan struct{}
	// setup serves the mail apps' autoconfig and autodiscover documents.
	setup http.Handler

	// storeMu guards store, the cached accounts store of the accounts
	// file in force (its path may change at a reload).
	storeMu sync.Mutex
	store   *auth.Store
}

// New returns the portal handler for opts.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Generation == nil:
		return nil, errors.New("portal: no Generation")
	case opts.Guard == nil:
		return nil, errors.New("portal: no lockout Guard")
	case opts.CheckPassword == nil:
		return nil, errors.New("portal: no CheckPassword")
	case opts.Reload == nil:
		return nil, errors.New("portal: no Reload")
	case opts.SessionIdle <= 0 || opts.SessionMax < opts.SessionIdle:
		return nil, fmt.Errorf("portal: session lifetimes idle %s, max %s", opts.SessionIdle, opts.SessionMax)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	css, err := assets.ReadFile("static/portal.css")
	if err != nil {
		return nil, fmt.Errorf("portal: %w", err)
	}
	s := &Server{
		opts:       opts,
		log:        opts.Log.With("proto", "portal"),
		now:        opts.Now,
		sessions:   memorySessions{newSessionStore(opts.SessionIdle, opts.SessionMax, opts.Now)},
		replay:     opts.Replay,
		tarpit:     newTarpitCounter(),
		pages:      pages,
		css:        css,
		minFailure: minFailureDelay,
		checks:     make(chan struct{}, maxConcurrentChecks),
	}
	if opts.Sessions != nil {
		s.sessions = &sharedSessions{kv: opts.Sessions, idle: opts.SessionIdle, max: opts.SessionMax, now: opts.Now}
	}
	if s.replay == nil {
		s.replay = &otp.ReplayGuard{}
	}
	if opts.MinFailureDelay > 0 {
		s.minFailure = opts.MinFailureDelay
	}
	if _, err := rand.Read(s.formKey[:]); err != nil {
		return nil, fmt.Errorf("portal: %w", err)
	}
	s.setup = mailsetup.NewHandler(s.mailSettings, s.log.With("component", "mailsetup"))
	s.routes()
	return s, nil
}

// routes registers every page. POSTs go through s.post, which checks the
// session and its CSRF token first, or, for the sign-in form, through
// s.signinPost, which checks the form's stateless token.
func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.getRoot)
	m.HandleFunc("GET /static/portal.css", s.getCSS)
	m.HandleFunc("GET /signin", s.getSignIn)
	m.HandleFunc("POST /signin", s.signinPost(s.postSignIn))
	m.HandleFunc("POST /signout", s.post(s.postSignOut))
	m.HandleFunc("GET /account", s.signedIn(s.getAccount))
	m.HandleFunc("POST /2fa/start", s.post(s.postStart))
	m.HandleFunc("GET /2fa/enroll", s.signedIn(s.getEnroll))
	m.HandleFunc("POST /2fa/enroll", s.post(s.postEnroll))
	m.HandleFunc("GET /2fa/qr.png", s.signedIn(s.getQR))
	m.HandleFunc("GET /2fa/codes", s.signedIn(s.getCodes))
	m.HandleFunc("POST /2fa/disable", s.post(s.postDisable))
	m.HandleFunc("POST /2fa/authenticators/add", s.post(s.postAddAuthenticator))
	m.HandleFunc("POST /2fa/authenticators/remove", s.post(s.postRemoveAuthenticator))
	m.HandleFunc("POST /passcodes/add", s.post(s.postAddPasscode))
	m.HandleFunc("GET /passcodes/new", s.signedIn(s.getNewPasscode))
	m.HandleFunc("POST /passcodes/delete", s.post(s.postDeletePasscode))
	m.HandleFunc("POST /setup/apple", s.post(s.postAppleProfile))
	m.HandleFunc("/", s.notFound)
	s.mux = m
}

// ServeHTTP sets the security headers every response carries, caps the
// body and dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Strict-Transport-Security", hstsHeader)
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if mailSetupPath(r.URL.Path) {
		s.setup.ServeHTTP(w, r)
		return
	}
	rememberLang(w, r)
	s.mux.ServeHTTP(w, r)
}

// getCSS serves the embedded style sheet (it holds no secret, but the
// no-store of every response stays: it is small).
func (s *Server) getCSS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	_, _ = w.Write(s.css)
}

// getRoot sends a signed-in user to the account page, anyone else to the
// sign-in form.
func (s *Server) getRoot(w http.ResponseWriter, r *http.Request) {
	_, ok, err := s.sessions.get(sessionID(r))
	if err != nil {
		s.sessionsUnavailable(w, r, err)
		return
	}
	if ok {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// sessionsUnavailable answers a request whose session could not be read
// or written (a shared store that does not answer): the "unavailable"
// page, 503. It fails closed: nothing of the session is served or
// changed.
func (s *Server) sessionsUnavailable(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("portal sessions unavailable; request refused", "client", clientIP(r).String(), "path", r.URL.Path, "err", err)
	s.message(w, r, http.StatusServiceUnavailable, "unavailable.title", "unavailable.text")
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.message(w, r, http.StatusNotFound, "notfound.title", "notfound.text")
}

// accounts returns Options.Accounts when set (the accounts database), or
// else the long-lived cached store of the accounts file in force in rt: it parses the file again only when the file changed, so a
// request costs a stat, not a parse. A reload that names another file
// gets a new store.
func (s *Server) accounts(rt Generation) *auth.Store {
	if s.opts.Accounts != nil {
		return s.opts.Accounts.WithNames(rt.Config.Users.Names)
	}
	path := rt.Config.Accounts
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	if s.store == nil || s.store.Path() != path {
		s.store = auth.OpenCachedStore(path)
	}
	return s.store.WithNames(rt.Config.Users.Names)
}

// clientOf returns the client's address and the local address it reached,
// as the password check forwards them to the backend.
func clientOf(r *http.Request) (client, local netip.AddrPort) {
	client, _ = netip.ParseAddrPort(r.RemoteAddr)
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local, _ = netip.ParseAddrPort(a.String())
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	}
	return client, local
}

// HTTPServer is the portal's running HTTPS listener.
type HTTPServer struct {
	srv  *http.Server
	addr net.Addr
	done chan error
}

// Addr is the address the portal listens on.
func (h *HTTPServer) Addr() net.Addr { return h.addr }

// Shutdown stops accepting, lets requests in flight finish (at most
// shutdownTimeout) and closes the listener.
func (h *HTTPServer) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := h.srv.Shutdown(ctx)
	if err != nil {
		_ = h.srv.Close()
	}
	if serr := <-h.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Listen opens the portal's HTTPS listener on addr and serves handler on
// it in the background. cert returns the certificate in force (the [tls]
// one, which a reload may replace); it is asked at every TLS handshake.
func Listen(addr string, handler http.Handler, cert func() *tls.Certificate, log *slog.Logger) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("portal: %w", err)
	}
	srv := &http.Server{
		Handler: handler,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				if c := cert(); c != nil {
					return c, nil
				}
				return nil, errors.New("portal: no certificate")
			},
		},
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// TLS handshake errors from scanners are noise: debug level.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	h := &HTTPServer{srv: srv, addr: ln.Addr(), done: make(chan error, 1)}
	go func() { h.done <- srv.ServeTLS(ln, "", "") }()
	return h, nil
}
