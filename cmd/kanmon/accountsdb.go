package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/kanmon-mail/kanmon/accountsdb"
	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/proxy"
)

// accountsSource is where kanmon serve reads the accounts: the accounts
// file, or the PostgreSQL database (db set), whose latest snapshot it
// keeps so that a config reload never waits on the database.
type accountsSource struct {
	db *accountsdb.DB

	mu   sync.Mutex
	snap *auth.Accounts
}

// openAccountsSource connects to the accounts database of cfg, if any,
// checks that this node's key files are the cluster's, and reads the
// first snapshot (with its generation, for the watcher).
func openAccountsSource(ctx context.Context, cfg *config.Config, log *slog.Logger) (*accountsSource, int64, error) {
	if cfg.AccountsURL == "" {
		return &accountsSource{}, 0, nil
	}
	db, err := accountsdb.Open(ctx, cfg.AccountsURL, log)
	if err != nil {
		return nil, 0, err
	}
	keys, err := auth.KeyCheckValues(cfg.StateDir)
	if err == nil {
		err = db.CheckKeys(ctx, keys)
	}
	if err != nil {
		db.Close()
		return nil, 0, err
	}
	a, g, err := db.LoadGeneration(ctx)
	if err != nil {
		db.Close()
		return nil, 0, err
	}
	return &accountsSource{db: db, snap: a}, g, nil
}

// set records a newer snapshot.
func (s *accountsSource) set(a *auth.Accounts) {
	s.mu.Lock()
	s.snap = a
	s.mu.Unlock()
}

// snapshot returns the latest snapshot.
func (s *accountsSource) snapshot() *auth.Accounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// generation loads the generation of cfg with the accounts of this
// source: the file's, read now, or the database's latest snapshot.
func (s *accountsSource) generation(cfg *config.Config) (*proxy.Generation, error) {
	if s.db == nil {
		return proxy.LoadGeneration(cfg)
	}
	return proxy.LoadGenerationWith(cfg, s.snapshot())
}

// withAccounts returns rt with the accounts read again: the file, or the
// database (now, not the snapshot: after a change this node wrote).
func (s *accountsSource) withAccounts(rt *proxy.Generation) (*proxy.Generation, error) {
	if s.db == nil {
		return rt.WithAccounts()
	}
	a, _, err := s.db.LoadGeneration(context.Background())
	if err != nil {
		return nil, err
	}
	s.set(a)
	return rt.WithAccountsFrom(a)
}

// store returns the store the portal changes the accounts through: nil
// for the file (the portal opens it itself), the database's otherwise.
func (s *accountsSource) store() *auth.Store {
	if s.db == nil {
		return nil
	}
	return auth.OpenSharedStore(s.db)
}

// close disconnects from the database.
func (s *accountsSource) close() {
	if s.db != nil {
		s.db.Close()
	}
}
