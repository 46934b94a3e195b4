//go:build unix

package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kanmon-mail/kanmon/internal/testenv"
)

// initdb creates the cluster in dataDir: UTF8 and the C locale, the
// superuser "postgres" without a password, and an access policy of its own
// (pg_hba.conf).
func (s *Server) initdb() error {
	out, err := os.OpenFile(filepath.Join(s.dir, "initdb.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), initdbTimeout)
	defer cancel()
	cmd := s.command(ctx, "initdb",
		"-D", s.dataDir,
		"-U", superuser,
		"-E", "UTF8",
		"--locale", "C",
		"--auth-local", "trust",
		"--auth-host", "scram-sha-256",
		"--no-sync",
	)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	testenv.GroupAttr(cmd, deathSig)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb -D %s: %v", s.dataDir, err)
	}
	// Trust only the superuser, only on the Unix socket (which only the
	// cluster's user can reach); everyone else over TCP with
	// SCRAM-SHA-256.
	hba := "# Written by kanmon's internal/pgtest.\n" +
		"# TYPE  DATABASE  USER      ADDRESS       METHOD\n" +
		"local   all       " + superuser + "  trust\n" +
		"host    all       all       127.0.0.1/32  scram-sha-256\n"
	if err := s.writeFile(filepath.Join(s.dataDir, "pg_hba.conf"), hba); err != nil {
		return err
	}
	// postgresql.conf takes pgtest.conf last, so its settings win.
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# Added by kanmon's internal/pgtest.\ninclude 'pgtest.conf'\n")
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}

// writeConfig writes pgtest.conf, the settings that override initdb's.
func (s *Server) writeConfig() error {
	lines := []string{
		"# Written by kanmon's internal/pgtest.",
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(s.port),
		"unix_socket_directories = '" + s.dataDir + "'",
		"unix_socket_permissions = 0700",
		"max_connections = 100",
		"password_encryption = 'scram-sha-256'",
		// Speed over durability: this cluster lives for one test. A
		// commit still writes its WAL to the page cache before it
		// returns (synchronous_commit = on, without the fsync), so
		// that it survives Kill; off would save nothing measurable.
		"fsync = off",
		"full_page_writes = off",
		"synchronous_commit = on",
		// Dynamic shared memory in the data directory rather than
		// /dev/shm, so that nothing outlives the directory.
		"dynamic_shared_memory_type = mmap",
		"shared_buffers = 32MB",
		// The log goes to stderr, which is postgres.log.
		"logging_collector = off",
		"log_destination = 'stderr'",
		"log_line_prefix = '%m [%p] %q%u@%d '",
		"lc_messages = 'C'",
		"timezone = 'UTC'",
		"log_timezone = 'UTC'",
	}
	return s.writeFile(filepath.Join(s.dataDir, "pgtest.conf"), strings.Join(lines, "\n")+"\n")
}

// writeFile writes data to path, mode 0600, owned by the cluster's user.
func (s *Server) writeFile(path, data string) error {
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return err
	}
	return s.id.chown(path)
}

// superConfig returns the connection settings of the superuser through the
// Unix socket.
func (s *Server) superConfig() (*pgx.ConnConfig, error) {
	return pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=5",
		s.dataDir, s.port, superuser))
}

// connected connects with cfg and runs f on the connection, all within
// timeout.
func connected(cfg *pgx.ConnConfig, timeout time.Duration, f func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return f(ctx, c)
}

// ping connects with cfg and runs SELECT 1.
func ping(cfg *pgx.ConnConfig) error {
	return connected(cfg, 5*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		var one int
		return c.QueryRow(ctx, "SELECT 1").Scan(&one)
	})
}

// createRole creates the login role and its database.
func (s *Server) createRole() error {
	cfg, err := s.superConfig()
	if err != nil {
		return err
	}
	// Utility statements take no parameters; the password is a literal
	// (standard_conforming_strings is on, so only ' needs doubling).
	pw := "'" + strings.ReplaceAll(s.password, "'", "''") + "'"
	return connected(cfg, 30*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		for _, q := range []string{
			"CREATE ROLE " + Role + " LOGIN PASSWORD " + pw,
			"CREATE DATABASE " + Database + " OWNER " + Role,
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
}
