package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Load reads, decodes and validates the config file at path. Errors name
// the file and, where known, the line: "kanmon.toml:12: ...".
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in front
		}
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	return Parse(abs, data)
}

// Parse decodes and validates config text as if read from file (an
// absolute path, used for errors and to resolve relative paths).
func Parse(file string, data []byte) (*Config, error) {
	c := Config{File: file, keys: indexKeys(data)}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, c.decodeError(err)
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return &c, nil
}

// durationKeys are the paths decoded into a Duration.
var durationKeys = []string{
	"preauth_timeout", "idle_timeout", "drain_timeout",
	"backend.imap.timeout", "backend.pop3.timeout", "backend.submission.timeout",
	"portal.session_idle", "portal.session_max",
}

// decodeError turns a go-toml error into "file:line: message".
func (c *Config) decodeError(err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		var msgs []string
		for i := range strict.Errors {
			e := &strict.Errors[i]
			row, _ := e.Position()
			msgs = append(msgs, c.errorAt(row, "unknown key %q", strings.Join(e.Key(), ".")).Error())
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if key := strings.Join(de.Key(), "."); key != "" && !strings.Contains(msg, key) {
			msg = key + ": " + msg
		}
		return c.errorAt(row, "%s", msg)
	}
	// go-toml gives no position when a TextUnmarshaler fails on a value
	// that is not a string (idle_timeout = 31); Duration is our only one.
	// The decoder stops at the first such key in the file.
	bad := ""
	for _, k := range durationKeys {
		info, ok := c.keys[k]
		if ok && isScalar(info.kind) && info.kind != unstable.String &&
			(bad == "" || info.line < c.keys[bad].line) {
			bad = k
		}
	}
	if bad != "" {
		return c.errorf(bad, "%s: want a duration string such as \"60s\" (got %s)", bad, strings.ToLower(c.keys[bad].kind.String()))
	}
	return c.errorAt(0, "%v", err)
}

func isScalar(k unstable.Kind) bool {
	return k != unstable.Array && k != unstable.InlineTable && k != unstable.Table && k != unstable.ArrayTable
}

// resolve makes p absolute relative to the config file's directory.
func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}
