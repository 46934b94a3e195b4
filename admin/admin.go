// Package admin is the running server's local control endpoint: HTTP over a
// unix socket in state_dir (mode 0600, so only the account that runs kanmon,
// and root, can use it). `kanmon reload` and `kanmon lockout list|clear`
// talk to it, and so do `kanmon sessions` and `kanmon passcode list` (for
// the passcodes' last use); the server answers from its live state, which
// the CLI could not read itself because the server holds bbolt's exclusive
// lock.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// SocketName is the socket's file name inside state_dir.
const SocketName = "kanmon.sock"

// requestTimeout bounds one admin request, a reload included.
const requestTimeout = 30 * time.Second

// Handlers are what the endpoint can do. A nil field answers 501.
type Handlers struct {
	// Reload re-reads config, accounts and certificate and swaps them in;
	// an error leaves the old configuration in force and is returned to
	// the caller verbatim (it names file and line).
	Reload func() error
	// LockoutList returns one line per lock in force.
	LockoutList func() ([]string, error)
	// LockoutClear clears the locks and counters of a user, an IP or a
	// prefix and returns how many entries went.
	LockoutClear func(target string) (int, error)
	// Sessions lists the live authenticated sessions (of every node, in
	// a cluster). An error that is a *PartialError does not fail the
	// answer: the list is served with the error as a warning.
	Sessions func() ([]Session, error)
	// LastUse returns the passcodes' last use, by passcode ID
	// (auth.AppPasscode.ID).
	LastUse func() (map[string]auth.LastUse, error)
	// Clients is where the server records the clients that present an
	// account password, for "kanmon clients" and "kanmon stale".
	Clients auth.ClientKeeper
}

// Session is one live authenticated session.
type Session struct {
	// Node is the kanmon node that holds the session ([redis] node);
	// empty on a single node without [redis].
	Node string `json:"node,omitempty"`
	// User is the account.
	User string `json:"user"`
	// Protocol is imap, pop3 or submission.
	Protocol string `json:"protocol"`
	// ClientIP is the client's address.
	ClientIP string `json:"client_ip"`
	// Method is "passcode" or "passthrough".
	Method string `json:"method"`
	// App is the passcode's app name, for Method "passcode".
	App string `json:"app,omitempty"`
	// Client is the client's IMAP ID name/version, if it sent one.
	Client string `json:"client,omitempty"`
	// Since is when the session logged in.
	Since time.Time `json:"since"`
	// BytesIn counts client→server bytes, BytesOut server→client.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
}

// Reply is the JSON body of every answer.
type Reply struct {
	// OK is false when Error is set.
	OK bool `json:"ok"`
	// Error is the failure, for the CLI to print.
	Error string `json:"error,omitempty"`
	// Warning is what is missing from an answer that is served anyway
	// (a *PartialError of the handler), for the CLI to print.
	Warning string `json:"warning,omitempty"`
	// Lines is the text answer, one entry a line.
	Lines []string `json:"lines,omitempty"`
	// Count is the number of entries affected.
	Count int `json:"count,omitempty"`
	// Sessions answers GET /sessions.
	Sessions []Session `json:"sessions,omitempty"`
	// LastUse answers GET /passcodes/last-use, by passcode ID.
	LastUse map[string]auth.LastUse `json:"last_use,omitempty"`
	// Clients answers GET /clients: one account's record.
	Clients []auth.PasswordClient `json:"clients,omitempty"`
	// ClientAccounts answers GET /clients/accounts, by account key
	// (auth.ClientUserKey).
	ClientAccounts map[string][]auth.PasswordClient `json:"client_accounts,omitempty"`
}

// Server serves Handlers on the socket.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string
}

// Listen creates the socket in stateDir, replacing a stale one, with mode
// 0600, and serves h on it until Close.
func Listen(stateDir string, h Handlers) (*Server, error) {
	path := filepath.Join(stateDir, SocketName)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: another kanmon is running", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if h.Reload == nil {
			reply(w, http.StatusNotImplemented, Reply{Error: "reload not available"})
			return
		}
		if err := h.Reload(); err != nil {
			reply(w, http.StatusUnprocessableEntity, Reply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Reply{OK: true})
	})
	mux.HandleFunc("GET /lockout", func(w http.ResponseWriter, r *http.Request) {
		if h.LockoutList == nil {
			reply(w, http.StatusNotImplemented, Reply{Error: "lockout not available"})
			return
		}
		lines, err := h.LockoutList()
		if err != nil {
			reply(w, http.StatusInternalServerError, Reply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Reply{OK: true, Lines: lines, Count: len(lines)})
	})
	mux.HandleFunc("POST /lockout/clear", func(w http.ResponseWriter, r *http.Request) {
		if h.LockoutClear == nil {
			reply(w, http.StatusNotImplemented, Reply{Error: "lockout not available"})
			return
		}
		target := r.URL.Query().Get("target")
		if target == "" {
			reply(w, http.StatusBadRequest, Reply{Error: "missing target (user, IP or prefix)"})
			return
		}
		n, err := h.LockoutClear(target)
		if err != nil {
			reply(w, http.StatusInternalServerError, Reply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Reply{OK: true, Count: n})
	})
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, r *http.Request) {
		if h.Sessions == nil {
			reply(w, http.StatusNotImplemented, Reply{Error: "sessions not available"})
			return
		}
		list, err := h.Sessions()
		var partial *PartialError
		var warning string
		switch {
		case errors.As(err, &partial):
			warning = err.Error()
		case err != nil:
			reply(w, http.StatusInternalServerError, Reply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Reply{OK: true, Sessions: list, Count: len(list), Warning: warning})
	})
	mux.HandleFunc("GET /passcodes/last-use", func(w http.ResponseWriter, r *http.Request) {
		if h.LastUse == nil {
			reply(w, http.StatusNotImplemented, Reply{Error: "passcode last use not available"})
			return
		}
		uses, err := h.LastUse()
		if err != nil {
			reply(w, http.StatusInternalServerError, Reply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Reply{OK: true, LastUse: uses, Count: len(uses)})
	})
	mux.HandleFunc("GET /clients", func(w http.ResponseWriter, r *http.Request) {
		kind, ok := clientsRequest(w, r, h)
		if !ok {
			return
		}
		user := r.URL.Query().Get("user")
		if user == "" {
			reply(w, http.StatusBadRequest, Reply{Error: "missing user"})
			return
		}
		list, err := h.Clients.Clients(kind, user)
		if err != nil {
			reply(w, http.StatusInternalServerError, Reply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Reply{OK: true, Clients: list, Count: len(list)})
	})
	mux.HandleFunc("GET /clients/accounts", func(w http.ResponseWriter, r *http.Request) {
		kind, ok := clientsRequest(w, r, h)
		if !ok {
			return
		}
		since, err := time.Parse(time.RFC3339Nano, r.URL.Query().Get("since"))
		if err != nil {
			reply(w, http.StatusBadRequest, Reply{Error: "since: want an RFC 3339 time"})
			return
		}
		all, err := h.Clients.Accounts(kind, since)
		if err != nil {
			reply(w, http.StatusInternalServerError, Reply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Reply{OK: true, ClientAccounts: all, Count: len(all)})
	})
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		path: path,
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.srv.Close()
	_ = os.Remove(s.path)
	return err
}

func reply(w http.ResponseWriter, status int, r Reply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(r)
}

// PartialError is a handler's error that leaves its answer incomplete
// but still worth serving: the answer goes out with Err as its Warning.
type PartialError struct {
	Err error
}

func (e *PartialError) Error() string { return e.Err.Error() }

func (e *PartialError) Unwrap() error { return e.Err }

// ErrNotRunning means no server answers on the socket.
var ErrNotRunning = errors.New("no running kanmon server found (no admin socket in state_dir)")

// Client talks to a running server's socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the socket in stateDir.
func NewClient(stateDir string) *Client {
	path := filepath.Join(stateDir, SocketName)
	return &Client{http: &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		},
	}}
}

// Reload asks the server to reload; the error carries the server's reason.
func (c *Client) Reload() error {
	_, err := c.do(http.MethodPost, "/reload")
	return err
}

// LockoutList returns the locks in force, one line each.
func (c *Client) LockoutList() ([]string, error) {
	r, err := c.do(http.MethodGet, "/lockout")
	return r.Lines, err
}

// LockoutClear clears target (user, IP or prefix) and returns the number
// of entries removed.
func (c *Client) LockoutClear(target string) (int, error) {
	r, err := c.do(http.MethodPost, "/lockout/clear?target="+url.QueryEscape(target))
	return r.Count, err
}

// Sessions lists the live authenticated sessions.
func (c *Client) Sessions() ([]Session, error) {
	list, _, err := c.SessionsWithWarning()
	return list, err
}

// SessionsWithWarning lists the live authenticated sessions, with the
// server's warning when the list is incomplete (in a cluster whose Redis
// does not answer: this node's sessions only).
func (c *Client) SessionsWithWarning() ([]Session, string, error) {
	r, err := c.do(http.MethodGet, "/sessions")
	return r.Sessions, r.Warning, err
}

// LastUse returns the passcodes' last use, by passcode ID.
func (c *Client) LastUse() (map[string]auth.LastUse, error) {
	r, err := c.do(http.MethodGet, "/passcodes/last-use")
	if r.LastUse == nil && err == nil {
		r.LastUse = map[string]auth.LastUse{}
	}
	return r.LastUse, err
}

// Clients returns user's record of kind of the clients that presented
// the account password.
func (c *Client) Clients(kind auth.ClientKind, user string) ([]auth.PasswordClient, error) {
	r, err := c.do(http.MethodGet, "/clients?kind="+kind.String()+"&user="+url.QueryEscape(user))
	return r.Clients, err
}

// ClientAccounts returns the records of kind with a client seen since
// since, by account key (auth.ClientUserKey).
func (c *Client) ClientAccounts(kind auth.ClientKind, since time.Time) (map[string][]auth.PasswordClient, error) {
	r, err := c.do(http.MethodGet, "/clients/accounts?kind="+kind.String()+"&since="+url.QueryEscape(since.UTC().Format(time.RFC3339Nano)))
	if r.ClientAccounts == nil && err == nil {
		r.ClientAccounts = map[string][]auth.PasswordClient{}
	}
	return r.ClientAccounts, err
}

// clientsRequest checks a /clients request: the records are kept, and
// its kind is known.
func clientsRequest(w http.ResponseWriter, r *http.Request, h Handlers) (auth.ClientKind, bool) {
	if h.Clients == nil {
		reply(w, http.StatusNotImplemented, Reply{Error: "password clients not available"})
		return 0, false
	}
	switch r.URL.Query().Get("kind") {
	case auth.ClientRefused.String():
		return auth.ClientRefused, true
	case auth.ClientPassword.String():
		return auth.ClientPassword, true
	}
	reply(w, http.StatusBadRequest, Reply{Error: "kind: want refused or password"})
	return 0, false
}

func (c *Client) do(method, path string) (Reply, error) {
	req, err := http.NewRequest(method, "http://kanmon"+path, nil)
	if err != nil {
		return Reply{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return Reply{}, ErrNotRunning
		}
		return Reply{}, fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	var r Reply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&r); err != nil {
		return Reply{}, fmt.Errorf("admin socket: bad reply: %w", err)
	}
	if !r.OK {
		return r, errors.New(r.Error)
	}
	return r, nil
}
