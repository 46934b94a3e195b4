package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/lockout"
	"github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy/backend"
	"github.com/kanmon-mail/kanmon/proxy/relay"
)

// Generation is one generation of configuration with everything loaded from
// it: the accounts, the pepper, certificates and backends. It is immutable
// once built; a reload builds a new one and swaps it in.
type Generation struct {
	// Config is the validated configuration.
	Config *config.Config
	// Policy decides every login attempt.
	Policy *auth.Policy
	// TLS serves the implicit and STARTTLS listeners; nil when none needs it.
	TLS *tls.Config
	// Backends maps a protocol to its mail server.
	Backends map[string]*backend.Backend
	// Pepper keys passcode hashes and lockout fingerprints.
	Pepper auth.Pepper
}

// LoadGeneration loads the accounts file, the pepper, the certificate and the
// backends that cfg names. Any error leaves nothing half-built.
func LoadGeneration(cfg *config.Config) (*Generation, error) {
	accounts, err := loadAccounts(cfg)
	if err != nil {
		return nil, err
	}
	return LoadGenerationWith(cfg, accounts)
}

// LoadGenerationWith is LoadGeneration with the accounts given, not read
// from cfg's file: a node whose accounts live in PostgreSQL passes its
// snapshot. The accounts get their canonical names ([users]).
func LoadGenerationWith(cfg *config.Config, accounts *auth.Accounts) (*Generation, error) {
	accounts, err := accounts.UnderNames(cfg.Users.Names, cfg.Accounts)
	if err != nil {
		return nil, err
	}
	pepper, err := auth.LoadOrCreatePepper(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	rt := &Generation{
		Config:   cfg,
		Policy:   auth.NewPolicy(accounts, pepper, cfg.TrustedPrefixes, *cfg.Require2FAOutside),
		Backends: map[string]*backend.Backend{},
		Pepper:   pepper,
	}
	if cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		rt.TLS = ServerTLSConfig(cert)
	}
	for _, proto := range []string{config.ProtocolIMAP, config.ProtocolPOP3, config.ProtocolSubmission} {
		bc := cfg.Backend.For(proto)
		if bc == nil {
			continue
		}
		b, err := backend.New(proto, bc)
		if err != nil {
			return nil, err
		}
		rt.Backends[proto] = b
	}
	return rt, nil
}

// WithAccounts returns a copy of rt with the accounts file read again and
// a new policy built from it; the configuration, certificate, backends
// and pepper stay rt's. The portal reloads this way after each change it
// writes, so that a passcode it deletes ends its sessions even while the
// config file is halfway through an admin's edit.
func (rt *Generation) WithAccounts() (*Generation, error) {
	accounts, err := loadAccounts(rt.Config)
	if err != nil {
		return nil, err
	}
	return rt.WithAccountsFrom(accounts)
}

// WithAccountsFrom is WithAccounts with the accounts given (a snapshot of
// the accounts database).
func (rt *Generation) WithAccountsFrom(accounts *auth.Accounts) (*Generation, error) {
	accounts, err := accounts.UnderNames(rt.Config.Users.Names, rt.Config.Accounts)
	if err != nil {
		return nil, err
	}
	next := *rt
	next.Policy = auth.NewPolicy(accounts, rt.Pepper, rt.Config.TrustedPrefixes, *rt.Config.Require2FAOutside)
	return &next, nil
}

// loadAccounts reads cfg's accounts file. Accounts in PostgreSQL come
// from the node's snapshot instead (LoadGenerationWith).
func loadAccounts(cfg *config.Config) (*auth.Accounts, error) {
	if cfg.AccountsURL != "" {
		return nil, errors.New("accounts: the accounts are in PostgreSQL: load them from the node's snapshot")
	}
	return auth.LoadAccounts(cfg.Accounts)
}

// CheckPassword checks user's password at the IMAP backend in force; see
// backend.Backend.CheckPassword. Without [backend.imap] it is an error
// (not a rejection).
func (rt *Generation) CheckPassword(ctx context.Context, user, password string, client backend.ClientInfo) error {
	b := rt.Backends[config.ProtocolIMAP]
	if b == nil {
		return errors.New("checking a password: no [backend.imap]")
	}
	return b.CheckPassword(ctx, user, password, client)
}

// Certificate returns the [tls] certificate that rt serves on the
// listeners and the portal; nil when it serves none.
func (rt *Generation) Certificate() *tls.Certificate {
	if rt.TLS == nil || len(rt.TLS.Certificates) == 0 {
		return nil
	}
	return &rt.TLS.Certificates[0]
}

// ServerTLSConfig is the client-facing TLS configuration for cert.
func ServerTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
}

// Server accepts client connections and runs their sessions.
type Server struct {
	log      *slog.Logger
	guard    lockout.Enforcer
	lastUse  auth.LastUseKeeper
	clients  auth.ClientKeeper
	current  atomic.Pointer[Generation]
	buffers  *relay.BufferPool
	parking  relay.Poller // the parked relay directions
	sessions registry
	limits   limits
	refusals refusalLog
	flights  loginFlights // passthrough attempts in flight (coalesce.go)
	metrics  *metrics.Metrics
	wg       sync.WaitGroup
}

// ServerOptions are a server's parts that outlive a reload.
type ServerOptions struct {
	// Lockout guards every login; nil turns lockout off (tests only).
	Lockout lockout.Enforcer
	// LastUse records each passcode login: an *auth.LastUseStore on one
	// node, a redisstate.LastUse in a cluster; nil records nothing.
	LastUse auth.LastUseKeeper
	// Clients records the clients that present an account password: a
	// 2FA account's refused ones, and the passthrough logins of accounts
	// without 2FA (an *auth.ClientStore on one node, a
	// redisstate.Clients in a cluster); nil records nothing.
	Clients auth.ClientKeeper
	// Metrics records logins, backend errors and refusals, and reads the
	// server's connections, sessions and relayed bytes at each scrape;
	// nil records nothing.
	Metrics *metrics.Metrics
}

// NewServer returns a server that starts with rt.
func NewServer(log *slog.Logger, rt *Generation, opts ServerOptions) *Server {
	if g, ok := opts.Lockout.(*lockout.Guard); ok && g == nil {
		opts.Lockout = nil // a nil *Guard is no lockout, not a Guard to call
	}
	if l, ok := opts.LastUse.(*auth.LastUseStore); ok && l == nil {
		opts.LastUse = nil // a nil *LastUseStore records nothing
	}
	if c, ok := opts.Clients.(*auth.ClientStore); ok && c == nil {
		opts.Clients = nil
	}
	s := &Server{log: log, guard: opts.Lockout, lastUse: opts.LastUse, clients: opts.Clients, buffers: relay.NewBufferPool(), metrics: opts.Metrics}
	s.current.Store(rt)
	if s.guard != nil {
		s.guard.SetExempt(rt.Config.TrustedPrefixes)
	}
	s.watchStressLog()
	s.metrics.WatchServer(s.stats)
	if s.lastUse != nil {
		if err := s.lastUse.Retain(rt.Policy.PasscodeIDs()); err != nil {
			log.Warn("pruning passcode last use failed", "err", err)
		}
	}
	for proto, b := range rt.Backends {
		s.metrics.ZeroBackendErrors(proto, backendErrKinds...)
		if b.TLSConfig.InsecureSkipVerify && b.TLSMode != config.TLSNone {
			log.Warn("backend certificate verification is OFF (insecure_skip_verify)", "backend", proto, "address", b.Address)
		}
	}
	return s
}

// Generation returns the configuration generation in force.
func (s *Server) Generation() *Generation { return s.current.Load() }

// Swap puts rt in force for connections accepted from now on, and closes
// the live sessions whose credential no longer stands under rt's policy
// (a revoked passcode, 2FA turned on or reset): in the background, all at
// once, each within a second; an IMAP client first gets "* BYE" where the
// stream allows it (see relayTap). It returns how many sessions it is
// closing. The last-use records of passcodes rt no longer has are dropped,
// and the lockout guard's exempt networks become rt's trusted_networks.
func (s *Server) Swap(rt *Generation) int {
	// Store first: register relies on it (see there).
	s.current.Store(rt)
	if s.guard != nil {
		s.guard.SetExempt(rt.Config.TrustedPrefixes)
	}
	n := s.revokeStale(rt.Policy)
	if n > 0 {
		s.log.Info("reload: closing sessions whose credential no longer stands", "sessions", n)
		s.metrics.Revoked(n)
	}
	if s.lastUse != nil {
		if err := s.lastUse.Retain(rt.Policy.PasscodeIDs()); err != nil {
			s.log.Warn("reload: pruning passcode last use failed", "err", err)
		}
	}
	return n
}

// RecordUse notes a use of the passcode or authenticator with the given
// ID where the server keeps the last use; a server that keeps none
// ignores it.
func (s *Server) RecordUse(id string, u auth.LastUse) {
	if s.lastUse != nil {
		s.lastUse.Record(id, u)
	}
}

// Clients returns where the server records the clients that present an
// account password; nil when it records none.
func (s *Server) Clients() auth.ClientKeeper { return s.clients }

// LastUse returns the last use of every passcode the server has seen
// used, by passcode ID (auth.AppPasscode.ID); nil when it keeps none.
func (s *Server) LastUse() (map[string]auth.LastUse, error) {
	if s.lastUse == nil {
		return nil, nil
	}
	return s.lastUse.All()
}

// Wait blocks until every session has ended.
func (s *Server) Wait() { s.wg.Wait() }

// newSessionID returns a short random id that ties a session's log lines
// together.
func newSessionID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// contextDone reports whether ctx has ended.
func contextDone(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}
