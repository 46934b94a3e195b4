// Package memimap is an in-process IMAP server for kanmon's demo and its
// fast tests: go-imap's imapmemserver plus Dovecot-style master-user logins
// (SASL PLAIN where the authcid is the master user and the authzid is the
// user to act as). It is never a stand-in for the real-Dovecot tests.
package memimap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
)

// Server is an in-memory IMAP server listening on one address.
type Server struct {
	masterUser, masterPassword string

	mem *imapmemserver.Server
	srv *imapserver.Server
	ln  net.Listener

	mu    sync.Mutex
	users map[string]*account
}

type account struct {
	user     *imapmemserver.User
	password string
}

// New returns a server whose master user may log in as anyone.
func New(masterUser, masterPassword string) *Server {
	s := &Server{
		masterUser:     masterUser,
		masterPassword: masterPassword,
		mem:            imapmemserver.New(),
		users:          map[string]*account{},
	}
	s.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &session{Session: s.mem.NewSession(), server: s}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapLiteralPlus: {}},
		InsecureAuth: true,
		Logger:       log.New(io.Discard, "", 0),
	})
	return s
}

// AddUser creates a user with an empty INBOX.
func (s *Server) AddUser(name, password string) error {
	u := imapmemserver.NewUser(name, password)
	if err := u.Create("INBOX", nil); err != nil {
		return fmt.Errorf("memimap: create INBOX for %s: %w", name, err)
	}
	s.mem.AddUser(u)
	s.mu.Lock()
	s.users[name] = &account{user: u, password: password}
	s.mu.Unlock()
	return nil
}

// Deliver appends a message to user's INBOX.
func (s *Server) Deliver(user string, message []byte) error {
	s.mu.Lock()
	a := s.users[user]
	s.mu.Unlock()
	if a == nil {
		return fmt.Errorf("memimap: no user %s", user)
	}
	_, err := a.user.Append("INBOX", bytes.NewReader(message), &imap.AppendOptions{Time: time.Now()})
	if err != nil {
		return fmt.Errorf("memimap: deliver to %s: %w", user, err)
	}
	return nil
}

// Listen starts serving on addr ("127.0.0.1:0" for any free port) and
// returns the address it listens on.
func (s *Server) Listen(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("memimap: %w", err)
	}
	s.ln = ln
	go func() { _ = s.srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

// Close stops the server and its sessions.
func (s *Server) Close() error { return s.srv.Close() }

// password returns user's password, if the user exists.
func (s *Server) password(user string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.users[user]
	if a == nil {
		return "", false
	}
	return a.password, true
}

// session adds SASL PLAIN with master users to imapmemserver's session.
type session struct {
	imapserver.Session
	server *Server
}

// AuthenticateMechanisms offers PLAIN only, as Dovecot's master login uses.
func (s *session) AuthenticateMechanisms() []string { return []string{sasl.Plain} }

// Authenticate accepts "authzid NUL master NUL masterpw" as authzid, and
// a user's own PLAIN credentials as that user.
func (s *session) Authenticate(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Unsupported mechanism"}
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity == "" || identity == username {
			return s.Login(username, password)
		}
		if username != s.server.masterUser || password != s.server.masterPassword {
			return imapserver.ErrAuthFailed
		}
		pw, ok := s.server.password(identity)
		if !ok {
			return imapserver.ErrAuthFailed
		}
		return s.Login(identity, pw)
	}), nil
}

// Move forwards to imapmemserver's MOVE support.
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if m, ok := s.Session.(imapserver.SessionMove); ok {
		return m.Move(w, numSet, dest)
	}
	return errors.New("MOVE not supported")
}

// Idle polls once before idling. go-imap's session tracker does not poll
// when IDLE starts, so an update landing between the server's "+ idling"
// and the tracker's setup would wait for the client's next command; the
// poll narrows that window to a few instructions.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if err := s.Session.Poll(w, true); err != nil {
		return err
	}
	return s.Session.Idle(w, stop)
}
