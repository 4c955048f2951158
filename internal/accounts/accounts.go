// Package accounts holds users and their API tokens. Tokens are random, shown once, and stored only as a
// SHA-256 hash: a copy of the database cannot be used to call the API.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
)

// TokenPrefix starts every API token, so leaked tokens are easy to spot.
const TokenPrefix = "whdb_"

var (
	// ErrInvalidToken means the token is unknown, revoked or expired.
	ErrInvalidToken = errors.New("invalid or revoked API token")
	// ErrUserExists means a user with that email exists already.
	ErrUserExists = errors.New("a user with that email exists already")
	// ErrNotFound means no such user.
	ErrNotFound = errors.New("not found")
)

// DB is what this package needs of a connection or pool.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// User is a person (or robot) who calls the API.
type User struct {
	ID          int64     `json:"id"`
	Email       string    `json:"email"`
	ServerAdmin bool      `json:"server_admin"`
	CreatedAt   time.Time `json:"created_at"`
}

// CreateUser adds a user.
func CreateUser(ctx context.Context, db DB, email string, serverAdmin bool) (*User, error) {
	email = strings.TrimSpace(email)
	u := &User{Email: email, ServerAdmin: serverAdmin}
	err := db.QueryRow(ctx, `INSERT INTO users (email, server_admin) VALUES ($1, $2) RETURNING id, created_at`, email, serverAdmin).Scan(&u.ID, &u.CreatedAt)
	if err != nil {
		switch pgerr.Code(err) {
		case pgerrcode.UniqueViolation:
			return nil, ErrUserExists
		case pgerrcode.CheckViolation:
			return nil, fmt.Errorf("email %q is not a valid address", email)
		}
		return nil, fmt.Errorf("error creating user: %w", err)
	}
	return u, nil
}

// UserByEmail finds a user by email, case-insensitively.
func UserByEmail(ctx context.Context, db DB, email string) (*User, error) {
	u := &User{}
	err := db.QueryRow(ctx, `SELECT id, email, server_admin, created_at FROM users WHERE lower(email) = lower($1)`, strings.TrimSpace(email)).
		Scan(&u.ID, &u.Email, &u.ServerAdmin, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("error finding user: %w", err)
	}
	return u, nil
}

// Token is an API token's record; the secret itself is only in NewToken's result.
type Token struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	Hint       string     `json:"hint"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// tokenLen is the length of TokenPrefix and 160 bits in unpadded lower-case base32.
const tokenLen = len(TokenPrefix) + 32

// WellFormedToken reports whether token has the shape CreateToken gives: what does not is refused without a
// look at the database.
func WellFormedToken(token string) bool {
	if len(token) != tokenLen || !strings.HasPrefix(token, TokenPrefix) {
		return false
	}
	for _, c := range token[len(TokenPrefix):] {
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// CreateToken issues a token for a user and returns it in the clear, the only time it is ever shown.
func CreateToken(ctx context.Context, db DB, userID int64, name string) (string, *Token, error) {
	raw := make([]byte, 20) // 160 bits
	if _, err := rand.Read(raw); err != nil {
		return "", nil, fmt.Errorf("error generating token: %w", err)
	}
	secret := TokenPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw))
	t := &Token{Name: name, Hint: secret[:len(TokenPrefix)+4]}
	err := db.QueryRow(ctx, `INSERT INTO api_tokens (user_id, name, token_hash, token_hint) VALUES ($1, $2, $3, $4) RETURNING id, created_at`,
		userID, name, HashToken(secret), t.Hint).Scan(&t.ID, &t.CreatedAt)
	if err != nil {
		return "", nil, fmt.Errorf("error storing token: %w", err)
	}
	return secret, t, nil
}

// HashToken is the stored form of a token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Authenticate returns the user a live token belongs to.
func Authenticate(ctx context.Context, db DB, token string) (*User, error) {
	if !WellFormedToken(token) {
		return nil, ErrInvalidToken
	}
	u := &User{}
	// last_used_at is written at most once a minute per token: a busy client costs no write per request.
	err := db.QueryRow(ctx, `
		WITH t AS (
			SELECT t.id, t.last_used_at, u.id AS user_id, u.email, u.server_admin, u.created_at
			FROM api_tokens t JOIN users u ON u.id = t.user_id
			WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
		), touched AS (
			UPDATE api_tokens a SET last_used_at = now() FROM t
			WHERE a.id = t.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
		)
		SELECT user_id, email, server_admin, created_at FROM t`, HashToken(token)).
		Scan(&u.ID, &u.Email, &u.ServerAdmin, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrInvalidToken
	}
	if err != nil {
		return nil, fmt.Errorf("error checking token: %w", err)
	}
	return u, nil
}
