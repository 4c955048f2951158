package pgroles

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
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

// Names on a database server come from an org's *name base*, never from its key: every login on a server can
// read pg_database, pg_roles and pg_stat_activity (PostgreSQL 15 cannot hide them), so anything in a name is
// visible to every other tenant of the server. A name base is opaque and random (NewNameBase), stored with the
// org. Orgs provisioned before opaque names used their key as name base until `webhookdb admin
// rename-org-databases` moves them; the functions below take whichever base the org has. A name base obeys the
// org key syntax (ValidateOrgKey), so everything that checks keys before naming objects checks bases too.

// NameBaseLength is the length of an opaque name base: a lower-case letter and 19 lower-case letters or digits
// (about 98 bits).
const NameBaseLength = 20

var nameBasePattern = regexp.MustCompile(`^[a-z][a-z0-9]{19}$`)

// NewNameBase returns a fresh opaque name base for an org.
func NewNameBase() string {
	return randomString(1, lowerLetters) + randomString(NameBaseLength-1, lowerAlnum)
}

// IsOpaqueNameBase reports whether base has the form NewNameBase gives (and so carries no org key).
func IsOpaqueNameBase(base string) bool { return nameBasePattern.MatchString(base) }

// DatabaseName is the org's replication database.
func DatabaseName(base string) string { return "org_" + base }

// OwnerRole owns the org database's schema and tables (NOLOGIN); the fanout writes through it.
func OwnerRole(base string) string { return "org_" + base + "_owner" }

// ReadonlyRole is the NOLOGIN group holding every read grant in the org database; issued login roles join it.
func ReadonlyRole(base string) string { return "org_" + base + "_readonly" }

// LoginRoleStem is the part of an issued login's name that says which org's group it joins:
// "org-<base>-readonly". Vault's role is named after it (and its username template puts "v-" before it), and
// logins issued directly are "p-" + stem + "-" + random (DirectLoginName); the rest of the name is random.
// Cut to 44 bytes, so that a login name stays within PostgreSQL's 63.
func LoginRoleStem(base string) string { return truncate("org-"+base+"-readonly", 44) }

// DirectLoginName is a fresh name for a login issued directly (postgres mode).
func DirectLoginName(base string) string {
	return DirectUsernamePrefix + LoginRoleStem(base) + "-" + randomString(16, lowerAlnum)
}

// MetaSchema holds webhookdb's own bookkeeping inside an org database (the fanout's applied LSN, the
// subscriptions' outbox); the org's read-only group may read it (pg_dump locks every table it dumps), never write.
const MetaSchema = "webhookdb_meta"

// AppliedTable, in MetaSchema, keeps the fanout's applied position per source. Provisioning creates it (so an
// org's first transaction runs no DDL); the fanout creates it in databases provisioned before it did.
const AppliedTable = "fanout_applied"

// AppliedTableSQL creates AppliedTable when it is missing.
func AppliedTableSQL() string {
	return `CREATE TABLE IF NOT EXISTS ` + pgx.Identifier{MetaSchema, AppliedTable}.Sanitize() + ` (
	source     text PRIMARY KEY,
	commit_lsn pg_lsn NOT NULL,
	seq        integer NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`
}

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
