// Package accountsdb keeps kanmon's accounts (the 2FA flag, passcode
// hashes, sealed TOTP secrets, one-time codes) in PostgreSQL, for several
// nodes: the accounts file's content, one row an account, in tables that
// kanmon creates and upgrades itself (versioned migrations, run under a
// PostgreSQL advisory lock, so two nodes starting at once don't race).
//
// DB implements auth.SharedAccounts: every change is one transaction,
// serialized with every other change of any node by a row lock, and
// sends NOTIFY on the channel NotifyChannel with the new generation. A
// Watcher on each node LISTENs, reloads the accounts into the node's
// snapshot on each notification, and compares the generation every few
// seconds and after every reconnect, so that a missed notification is
// caught up. Logins never wait on PostgreSQL: they read the snapshot.
//
// An account's authenticators are rows of the table authenticators, in
// order (migration 00002). For rolling upgrades, where nodes of the
// version before it (which know only accounts.totp and totp_enrolled)
// share the database with newer ones for a while, every write also sets
// accounts.totp and totp_enrolled to the account's first authenticator
// (empty and NULL with none): an older node sees that one. Reading, an
// account whose rows start with the authenticator in accounts.totp has
// those rows; one without (an older node enrolled it, or rewrote it with
// another authenticator) has accounts.totp, if set, as its one
// authenticator, named auth.LegacyAuthenticatorName. Accounts are handed
// to auth normalized (auth.Accounts.Normalize). An older node that
// rewrites an account it read writes accounts.totp back as it was, so
// the rows still hold: they are deleted with their account only at
// commit, and only if it is gone (a trigger, not ON DELETE CASCADE, which
// that rewrite's DELETE would set off).
package accountsdb

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/kanmon-mail/kanmon/auth"
)

// NotifyChannel is the channel every change NOTIFYs, with the new
// generation as its payload.
const NotifyChannel = "kanmon_accounts"

// opTimeout bounds one load or update.
const opTimeout = 10 * time.Second

//go:embed migrations/*.sql
var migrations embed.FS

// ErrUnavailable wraps the cause of a failed read or write: PostgreSQL
// can't be reached, or the transaction failed. It is auth's, so that
// the portal can tell it without importing this package.
var ErrUnavailable = auth.ErrUnavailable

// DB is the accounts database.
type DB struct {
	pool  *pgxpool.Pool
	where string
	log   *slog.Logger
}

var _ auth.SharedAccounts = (*DB)(nil)

// IsURL reports whether an accounts setting names a PostgreSQL database
// (postgres:// or postgresql://) rather than a file.
func IsURL(s string) bool {
	for _, p := range []string{"postgres://", "postgresql://"} {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

// Open connects to the database at url (a libpq URL; its password is
// best given with passfile=), creates or upgrades kanmon's tables, and
// returns the DB. PostgreSQL must answer: a node does not start without
// its accounts.
func Open(ctx context.Context, url string, log *slog.Logger) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse error may quote the URL, password and all.
		return nil, fmt.Errorf("accounts: %w", errBadURL)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	where := fmt.Sprintf("postgres %s@%s/%s", cfg.ConnConfig.User,
		net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))), cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("accounts: %s: %w", where, err)
	}
	d := &DB{pool: pool, where: where, log: log.With("component", "accountsdb")}
	if err := d.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

// errBadURL stands for an accounts URL that does not parse: pgx's own
// error is not shown, since it may quote a password.
var errBadURL = errors.New("the accounts URL does not parse as a PostgreSQL URL")

// migrate runs the migrations not applied yet, holding PostgreSQL's
// advisory lock so that nodes starting together take turns.
func (d *DB) migrate(ctx context.Context) error {
	db := stdlib.OpenDBFromPool(d.pool)
	defer db.Close()
	return migrateDB(ctx, db, d.where, 0)
}

// migrateDB applies the embedded migrations to db: all of them, or those
// up to version upTo when it is not 0 (the tests of upgrades).
func migrateDB(ctx context.Context, db *sql.DB, where string, upTo int64) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("accounts: %s: migrations: %w", where, err)
	}
	files, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("accounts: migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, files,
		goose.WithSessionLocker(locker), goose.WithTableName("kanmon_schema_version"))
	if err != nil {
		return fmt.Errorf("accounts: %s: migrations: %w", where, err)
	}
	if upTo > 0 {
		_, err = p.UpTo(ctx, upTo)
	} else {
		_, err = p.Up(ctx)
	}
	if err != nil {
		return fmt.Errorf("accounts: %s: migrating the schema: %w", where, err)
	}
	return nil
}

// Where names the database: "postgres user@host:port/db".
func (d *DB) Where() string { return d.where }

// Close closes the connections.
func (d *DB) Close() { d.pool.Close() }

// Generation returns the generation of the last change.
func (d *DB) Generation(ctx context.Context) (int64, error) {
	var g int64
	err := d.pool.QueryRow(ctx, "SELECT generation FROM kanmon_meta WHERE id = 1").Scan(&g)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	return g, nil
}

// Load returns every account, in the order they were added.
func (d *DB) Load() (*auth.Accounts, error) {
	a, _, err := d.LoadGeneration(context.Background())
	return a, err
}

// LoadGeneration returns every account and the generation they are at,
// read in one snapshot.
func (d *DB) LoadGeneration(ctx context.Context) (*auth.Accounts, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	defer tx.Rollback(ctx)
	var g int64
	if err := tx.QueryRow(ctx, "SELECT generation FROM kanmon_meta WHERE id = 1").Scan(&g); err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	a, _, err := loadAll(ctx, tx)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	return a, g, nil
}

// Update is auth.SharedAccounts.Update: one transaction, after the row
// lock on kanmon_meta that every change of every node takes first, so a
// one-time code is spent once however many nodes race for it.
func (d *DB) Update(fn func(*auth.Accounts) error, validate func(*auth.Accounts) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	defer tx.Rollback(ctx)
	var g int64
	if err := tx.QueryRow(ctx, "SELECT generation FROM kanmon_meta WHERE id = 1 FOR UPDATE").Scan(&g); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	old, positions, err := loadAll(ctx, tx)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	cur := cloneAccounts(old)
	if err := fn(cur); err != nil {
		return err
	}
	if err := validate(cur); err != nil {
		return err
	}
	changed, err := writeChanges(ctx, tx, old, cur, positions, g+1)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	if !changed {
		return nil
	}
	if _, err := tx.Exec(ctx, "UPDATE kanmon_meta SET generation = $1 WHERE id = 1", g+1); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, strconv.FormatInt(g+1, 10)); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
	}
	return nil
}

// CheckKeys compares this node's key check values (auth.KeyCheckValues)
// with the cluster's: the first node to start records its own; a node
// whose keys differ gets an error that says which file to copy.
func (d *DB) CheckKeys(ctx context.Context, values map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for name, v := range values {
		if _, err := d.pool.Exec(ctx, "INSERT INTO kanmon_keys (name, check_value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, v); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
		}
		var have string
		if err := d.pool.QueryRow(ctx, "SELECT check_value FROM kanmon_keys WHERE name = $1", name).Scan(&have); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, d.where, err)
		}
		if have != v {
			return fmt.Errorf("state_dir/%s differs from the one the other nodes of %s use: every node must have the same %s; copy it from a running node's state_dir and start again", name, d.where, name)
		}
	}
	return nil
}

// Lazy is an auth.SharedAccounts that connects for each Load or Update
// and disconnects after: for the CLI, whose commands make one change and
// exit, and for kanmon check.
type Lazy struct {
	url string
	log *slog.Logger
}

var _ auth.SharedAccounts = (*Lazy)(nil)

// NewLazy returns a Lazy for the database at url.
func NewLazy(url string, log *slog.Logger) *Lazy { return &Lazy{url: url, log: log} }

// open connects (and migrates).
func (l *Lazy) open() (*DB, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	d, err := Open(ctx, l.url, l.log)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return d, nil
}

// Load is DB.Load on a connection of its own.
func (l *Lazy) Load() (*auth.Accounts, error) {
	d, err := l.open()
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Load()
}

// Update is DB.Update on a connection of its own.
func (l *Lazy) Update(fn func(*auth.Accounts) error, validate func(*auth.Accounts) error) error {
	d, err := l.open()
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Update(fn, validate)
}

// Where names the database as DB.Where does, without connecting.
func (l *Lazy) Where() string {
	cfg, err := pgx.ParseConfig(l.url)
	if err != nil {
		return "postgres (a URL that does not parse)"
	}
	return fmt.Sprintf("postgres %s@%s/%s", cfg.User, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), cfg.Database)
}
