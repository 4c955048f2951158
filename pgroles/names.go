package pgroles

import (
	"errors"
	"fmt"
	"regexp"
)

var (
	// ErrInvalidOrgKey means an org key does not match ^[a-z][a-z0-9_]{0,40}$.
	ErrInvalidOrgKey = errors.New("invalid org key: use 1 to 41 characters, a lower-case letter first, then lower-case letters, digits or underscores")
	// ErrInvalidUsername means a login role name is not one webhookdb issues (letters, digits, '-' and '_',
	// at most 63 characters); such a name is never rendered into a statement.
	ErrInvalidUsername = errors.New("invalid login role name")
)

var (
	orgKeyPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,40}$`)
	usernamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)
)

// ValidateOrgKey checks an org key before it names any database object.
func ValidateOrgKey(key string) error {
	if !orgKeyPattern.MatchString(key) {
		return fmt.Errorf("%w (got %q)", ErrInvalidOrgKey, key)
	}
	return nil
}

// ValidateUsername checks a login role name before it is rendered into a statement template.
func ValidateUsername(name string) error {
	if !usernamePattern.MatchString(name) {
		return fmt.Errorf("%w (got %q)", ErrInvalidUsername, name)
	}
	return nil
}

// DatabaseName is the org's replication database.
func DatabaseName(orgKey string) string { return "org_" + orgKey }

// OwnerRole owns the org database's schema and tables (NOLOGIN); the fanout writes through it.
func OwnerRole(orgKey string) string { return "org_" + orgKey + "_owner" }

// ReadonlyRole is the NOLOGIN group holding every read grant in the org database; issued login roles join it.
func ReadonlyRole(orgKey string) string { return "org_" + orgKey + "_readonly" }

// MetaSchema holds webhookdb's own bookkeeping inside an org database (the fanout's applied LSN); users'
// read-only roles are not granted it.
const MetaSchema = "webhookdb_meta"

// GuardSchema holds the event trigger that refuses DDL from read-only logins. It is owned by the admin
// (superuser), not by the org owner: an event trigger function runs with the privileges of whoever runs DDL,
// superusers included, so the role the fanout writes as must not be able to replace it.
const GuardSchema = "webhookdb_guard"

// VaultRole is the role Vault's database engine connects as on each server: CREATEROLE, pg_signal_backend,
// CONNECT on postgres and ADMIN on each org's read-only group; never superuser.
const VaultRole = "webhookdb_vault"

// FanoutRole is the login role the fanout writes as: a member of every org owner role on the server, nothing
// else. Its password comes from a Vault static role (or, without Vault, from webhookdb itself).
const FanoutRole = "webhookdb_fanout"

// orgKeyFromDatabase returns the org key of an org database name, or false.
func orgKeyFromDatabase(datname string) (string, bool) {
	if len(datname) <= len("org_") || datname[:4] != "org_" {
		return "", false
	}
	key := datname[4:]
	return key, ValidateOrgKey(key) == nil
}
