package savedquery

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
)

// MaxSQLBytes bounds a saved statement: enough for any report, small enough that parsing it is cheap.
const MaxSQLBytes = 64 << 10

// MaxPerOrg bounds the saved queries of one org.
const MaxPerOrg = 100

// TokenPrefix starts every public token, so one is recognised (and never mistaken for an API token, whdb_).
const TokenPrefix = "sqt_"

var (
	// ErrNotFound: no such saved query in the org (or no live query has the token).
	ErrNotFound = errors.New("saved query not found")
	// ErrExists: the org has a saved query of that name.
	ErrExists = errors.New("a saved query of that name exists already")
	// ErrTooMany: the org has MaxPerOrg saved queries.
	ErrTooMany = fmt.Errorf("an organization keeps at most %d saved queries", MaxPerOrg)
	// ErrPublic and ErrPrivate: publish of a public query, roll or unpublish of a private one.
	ErrPublic  = errors.New("the saved query is public already")
	ErrPrivate = errors.New("the saved query is not public")
)

var (
	nameRE  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	tokenRE = regexp.MustCompile(`^sqt_[a-z2-7]{26}$`)
)

// ValidName reports whether name can name a saved query (the table's CHECK).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ValidateSQL checks what can be checked without a database: not blank, at most MaxSQLBytes, valid UTF-8
// without NUL (which Postgres refuses in text).
func ValidateSQL(sql string) error {
	switch {
	case strings.TrimSpace(sql) == "":
		return &Refusal{Reason: "required"}
	case len(sql) > MaxSQLBytes:
		return &Refusal{Reason: fmt.Sprintf("%d bytes; a saved query has at most %d", len(sql), MaxSQLBytes)}
	case !utf8.ValidString(sql) || strings.ContainsRune(sql, 0):
		return &Refusal{Reason: "must be valid UTF-8 without NUL characters"}
	}
	return nil
}

// DB is what the store's functions run on: a pool, a connection or a transaction of the application database.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Query is a saved query.
type Query struct {
	ID        int64
	OrgID     int64
	Name      string
	SQL       string
	CreatedBy *int64
	// TokenHint is the public token's first characters; empty while the query is private.
	TokenHint   string
	PublishedAt *time.Time
	LastRunAt   *time.Time
	LastError   string
	CreatedAt   time.Time
}

// Public reports whether the query has a public URL.
func (q *Query) Public() bool { return q.PublishedAt != nil }

// columns are read from the table aliased q in every statement.
const columns = `q.id, q.org_id, q.name, q.sql, q.created_by, coalesce(q.public_token_hint, ''), q.published_at,
	q.last_run_at, coalesce(q.last_error, ''), q.created_at`

func scan(row pgx.Row) (*Query, error) {
	q := &Query{}
	err := row.Scan(&q.ID, &q.OrgID, &q.Name, &q.SQL, &q.CreatedBy, &q.TokenHint, &q.PublishedAt, &q.LastRunAt, &q.LastError, &q.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return q, err
}

// NewToken returns a public token (130 random bits) and its stored hash.
func NewToken() (token string, hash []byte) {
	token = TokenPrefix + strings.ToLower(rand.Text())
	return token, HashToken(token)
}

// HashToken is the stored form of a public token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// WellFormedToken reports whether s is shaped like a public token: anything else is not found without a query.
func WellFormedToken(s string) bool { return tokenRE.MatchString(s) }

func hint(token string) string { return token[:len(TokenPrefix)+4] }

// Create saves a query (public: with a token, returned once). The SQL must have passed Check.
func Create(ctx context.Context, db DB, orgID int64, userID *int64, name, sql string, public bool) (*Query, string, error) {
	if !ValidName(name) {
		return nil, "", &Refusal{Reason: "use 1 to 63 characters: a lower-case letter, then lower-case letters, digits, _ or -"}
	}
	if err := ValidateSQL(sql); err != nil {
		return nil, "", err
	}
	var token string
	var hash []byte
	var tokenHint *string
	if public {
		token, hash = NewToken()
		h := hint(token)
		tokenHint = &h
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("error starting transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // nothing to keep on error
	// The org's row serialises creations, so the count below holds.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE`, orgID); err != nil {
		return nil, "", fmt.Errorf("error locking the organization: %w", err)
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM saved_queries WHERE org_id = $1`, orgID).Scan(&n); err != nil {
		return nil, "", fmt.Errorf("error counting saved queries: %w", err)
	}
	if n >= MaxPerOrg {
		return nil, "", ErrTooMany
	}
	q, err := scan(tx.QueryRow(ctx, `
		INSERT INTO saved_queries AS q (org_id, name, sql, created_by, public_token_hash, public_token_hint, published_at)
		VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5::bytea IS NULL THEN NULL ELSE now() END)
		RETURNING `+columns, orgID, name, sql, userID, hash, tokenHint))
	if pgerr.Is(err, pgerrcode.UniqueViolation) {
		return nil, "", ErrExists
	}
	if err != nil {
		return nil, "", fmt.Errorf("error saving the query: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, "", fmt.Errorf("error saving the query: %w", err)
	}
	return q, token, nil
}

// List returns the org's saved queries by name.
func List(ctx context.Context, db DB, orgID int64) ([]*Query, error) {
	rows, err := db.Query(ctx, `SELECT `+columns+` FROM saved_queries q WHERE org_id = $1 ORDER BY name`, orgID)
	if err != nil {
		return nil, fmt.Errorf("error listing saved queries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Query, error) { return scan(row) })
	if err != nil {
		return nil, fmt.Errorf("error listing saved queries: %w", err)
	}
	return out, nil
}

// Get returns the org's saved query of that name.
func Get(ctx context.Context, db DB, orgID int64, name string) (*Query, error) {
	return scan(db.QueryRow(ctx, `SELECT `+columns+` FROM saved_queries q WHERE org_id = $1 AND name = $2`, orgID, name))
}

// ByToken returns the live public query the token opens: not one of a deleted org, not after the token was
// rolled or the query unpublished or deleted.
func ByToken(ctx context.Context, db DB, token string) (*Query, error) {
	if !WellFormedToken(token) {
		return nil, ErrNotFound
	}
	return scan(db.QueryRow(ctx, `
		SELECT `+columns+`
		FROM saved_queries q JOIN organizations o ON o.id = q.org_id AND o.deleted_at IS NULL
		WHERE q.public_token_hash = $1`, HashToken(token)))
}

// Delete removes the org's saved query (and so its public URL).
func Delete(ctx context.Context, db DB, orgID int64, name string) error {
	tag, err := db.Exec(ctx, `DELETE FROM saved_queries q WHERE org_id = $1 AND name = $2`, orgID, name)
	if err != nil {
		return fmt.Errorf("error deleting the saved query: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Publish gives a private query a public token; with roll, it replaces a public query's token instead (the old
// URL stops working at once). The token is returned once.
func Publish(ctx context.Context, db DB, orgID int64, name string, roll bool) (*Query, string, error) {
	token, hash := NewToken()
	cond := "published_at IS NULL"
	if roll {
		cond = "published_at IS NOT NULL"
	}
	q, err := scan(db.QueryRow(ctx, `
		UPDATE saved_queries q SET public_token_hash = $3, public_token_hint = $4, published_at = now()
		WHERE org_id = $1 AND name = $2 AND `+cond+` RETURNING `+columns, orgID, name, hash, hint(token)))
	if errors.Is(err, ErrNotFound) {
		return nil, "", stateError(ctx, db, orgID, name, roll)
	}
	if err != nil {
		return nil, "", fmt.Errorf("error publishing the saved query: %w", err)
	}
	return q, token, nil
}

// Unpublish revokes a public query's token: its URL answers 404 from now on.
func Unpublish(ctx context.Context, db DB, orgID int64, name string) (*Query, error) {
	q, err := scan(db.QueryRow(ctx, `
		UPDATE saved_queries q SET public_token_hash = NULL, public_token_hint = NULL, published_at = NULL
		WHERE org_id = $1 AND name = $2 AND published_at IS NOT NULL RETURNING `+columns, orgID, name))
	if errors.Is(err, ErrNotFound) {
		return nil, stateError(ctx, db, orgID, name, true)
	}
	if err != nil {
		return nil, fmt.Errorf("error unpublishing the saved query: %w", err)
	}
	return q, nil
}

// stateError says why an update that needed a public (or private) query found none.
func stateError(ctx context.Context, db DB, orgID int64, name string, wantPublic bool) error {
	q, err := Get(ctx, db, orgID, name)
	switch {
	case err != nil:
		return err
	case wantPublic && !q.Public():
		return ErrPrivate
	case !wantPublic && q.Public():
		return ErrPublic
	}
	return fmt.Errorf("the saved query %s changed meanwhile; try again", name)
}

// RecordRun notes an execution of the query and why it failed ("" when it did not).
func RecordRun(ctx context.Context, db DB, id int64, failure string) error {
	if len(failure) > 2048 {
		failure = strings.ToValidUTF8(failure[:2048], "")
	}
	_, err := db.Exec(ctx, `UPDATE saved_queries q SET last_run_at = now(), last_error = nullif($2, '') WHERE id = $1`, id, failure)
	if err != nil {
		return fmt.Errorf("error recording the run of a saved query: %w", err)
	}
	return nil
}
