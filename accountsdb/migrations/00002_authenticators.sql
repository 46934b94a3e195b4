-- +goose Up
-- An account's authenticators (the accounts file's
-- [[account.authenticator]] tables), up to auth.MaxAuthenticators, in
-- order: position 0 is the first. The existing authenticators move here
-- as the one named 'Authenticator' (auth.LegacyAuthenticatorName).
--
-- Rolling upgrades: while a cluster upgrades, nodes of the version
-- before this table (old nodes, which read and write only accounts.totp)
-- share the database with new ones. So accounts.totp and totp_enrolled
-- stay, as a mirror that new nodes write in the same transaction as the
-- rows here: the first authenticator's totp and added ('' and NULL for
-- an account with none). An old node thus sees each account's first
-- authenticator, and signs in with it alone. New nodes read an account
-- as follows:
--   * rows here whose first totp equals accounts.totp: those rows;
--   * otherwise accounts.totp, if set, as the one authenticator named
--     'Authenticator' (an old node enrolled it, or replaced the account);
--     the rows, if any, are stale and ignored until a new node rewrites
--     the account, which replaces them.
-- An old node that rewrites an account it read (a passcode added, a
-- one-time code spent) deletes and inserts its accounts row in one
-- transaction, writing back the accounts.totp it read: the mirror, so
-- the rows still hold. That is why the rows are not tied to accounts by
-- a foreign key ON DELETE CASCADE, which would drop them with that
-- DELETE: the trigger below deletes them instead at commit, and only if
-- the account is then gone (2FA turned off), and follows a rename. Once
-- no old node is left, a later migration may replace it with a foreign
-- key.
CREATE TABLE authenticators (
	account  text NOT NULL,
	position integer NOT NULL,
	name     text NOT NULL,
	totp     text NOT NULL,
	added    timestamptz NOT NULL,
	-- The order is the data (the first is the mirror); names are unique
	-- case-insensitively, which auth checks.
	PRIMARY KEY (account, position),
	UNIQUE (account, name)
);

INSERT INTO authenticators (account, position, name, totp, added)
	SELECT name, 0, 'Authenticator', totp, COALESCE(totp_enrolled, enabled)
	FROM accounts WHERE totp <> '';

-- kanmon_authenticators_cascade is ON DELETE CASCADE ON UPDATE CASCADE,
-- run at commit: see above.
-- +goose StatementBegin
CREATE FUNCTION kanmon_authenticators_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		IF OLD.name = NEW.name THEN
			RETURN NULL;
		END IF;
		IF NOT EXISTS (SELECT 1 FROM authenticators WHERE account = NEW.name) THEN
			UPDATE authenticators SET account = NEW.name WHERE account = OLD.name;
		END IF;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM accounts WHERE name = OLD.name) THEN
		DELETE FROM authenticators WHERE account = OLD.name;
	END IF;
	RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE CONSTRAINT TRIGGER authenticators_cascade
	AFTER DELETE OR UPDATE OF name ON accounts
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE PROCEDURE kanmon_authenticators_cascade();

-- +goose Down
-- accounts.totp and totp_enrolled hold each account's first
-- authenticator: the version before this one reads that.
DROP TRIGGER authenticators_cascade ON accounts;
DROP FUNCTION kanmon_authenticators_cascade();
DROP TABLE authenticators;
