// Package pgerr answers questions about PostgreSQL errors by their fields (SQLSTATE, constraint, table), never
// by message text, which depends on the server's lc_messages.
package pgerr

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Code is the SQLSTATE of err's *pgconn.PgError, or "" when err carries none.
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Is reports whether err carries a *pgconn.PgError with one of the given SQLSTATEs (pgerrcode constants).
func Is(err error, codes ...string) bool {
	code := Code(err)
	if code == "" {
		return false
	}
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

// As returns err's *pgconn.PgError, or nil.
func As(err error) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr
	}
	return nil
}
