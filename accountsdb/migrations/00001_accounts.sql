-- +goose Up
-- kanmon's accounts: the accounts file's [[account]] tables, one row an
-- account, with its passcodes and one-time codes in their own tables.
-- Hashes and sealed TOTP secrets are stored as the file stores them.
CREATE TABLE kanmon_meta (
	id         integer PRIMARY KEY CHECK (id = 1),
	-- generation counts the changes: every Update adds one, and the
	-- nodes compare it with the one their snapshot was read at.
	generation bigint NOT NULL
);
INSERT INTO kanmon_meta (id, generation) VALUES (1, 0);

-- check values (HMAC-SHA256 of a fixed label) of the key files every
-- node must share: pepper and totp.key.
CREATE TABLE kanmon_keys (
	name        text PRIMARY KEY,
	check_value text NOT NULL
);

CREATE TABLE accounts (
	name          text PRIMARY KEY,
	position      bigint NOT NULL,
	enabled       timestamptz NOT NULL,
	totp          text NOT NULL DEFAULT '',
	totp_enrolled timestamptz,
	-- generation is kanmon_meta's generation of the account's last change.
	generation    bigint NOT NULL
);

CREATE TABLE passcodes (
	account   text NOT NULL REFERENCES accounts (name) ON DELETE CASCADE ON UPDATE CASCADE,
	position  integer NOT NULL,
	app       text NOT NULL,
	created   timestamptz NOT NULL,
	hash      text NOT NULL,
	protocols text[] NOT NULL DEFAULT '{}',
	PRIMARY KEY (account, app)
);

CREATE TABLE one_time_codes (
	account  text NOT NULL REFERENCES accounts (name) ON DELETE CASCADE ON UPDATE CASCADE,
	position integer NOT NULL,
	hash     text NOT NULL,
	PRIMARY KEY (account, hash)
);

-- +goose Down
DROP TABLE one_time_codes;
DROP TABLE passcodes;
DROP TABLE accounts;
DROP TABLE kanmon_keys;
DROP TABLE kanmon_meta;
