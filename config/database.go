package config

import (
	"errors"
	"net/url"
	"strings"
)

// IsDatabaseURL reports whether an accounts setting names a PostgreSQL
// database (postgres:// or postgresql://) rather than a file.
func IsDatabaseURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// databaseURL checks an accounts URL and makes its passfile parameter
// absolute (relative to the config file). A password in the URL is
// refused: it belongs in the passfile, out of the config file.
func (c *Config) databaseURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "", errors.New("want postgres://user@host:port/database?sslmode=...&passfile=FILE")
	}
	if _, set := u.User.Password(); set {
		return "", errors.New("the URL holds a password: put it in a passfile (passfile=FILE) instead")
	}
	if u.User.Username() == "" {
		return "", errors.New("the URL names no user (postgres://kanmon@host/...)")
	}
	q := u.Query()
	if q.Has("password") {
		return "", errors.New("the URL holds a password: put it in a passfile (passfile=FILE) instead")
	}
	if pf := q.Get("passfile"); pf != "" {
		q.Set("passfile", c.resolve(pf))
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}
