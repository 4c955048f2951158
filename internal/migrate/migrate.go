// Package migrate applies the application database's embedded migrations (sql/migrations) with goose.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	schema "github.com/webhookdb-go/webhookdb/sql"
)

// lockID serialises concurrent migrators (several servers starting at once) on a session advisory lock.
const lockID = 0x77686462 // "whdb"

// Result says what a run did.
type Result struct {
	Applied []int64 // versions applied by this run, in order
	Current int64   // the database's version afterwards
}

// Up applies every pending migration to the database at connString. Running it again is a no-op.
func Up(ctx context.Context, connString string, logger *slog.Logger) (*Result, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("error parsing database URL: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	return up(ctx, db, logger)
}

func up(ctx context.Context, db *sql.DB, logger *slog.Logger) (*Result, error) {
	migrations, err := fs.Sub(schema.Migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("error reading embedded migrations: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID))
	if err != nil {
		return nil, fmt.Errorf("error creating migration lock: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("error preparing migrations: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("error applying migrations: %w", err)
	}
	res := &Result{}
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Version)
		if logger != nil {
			logger.InfoContext(ctx, "applied migration", slog.Int64("version", r.Source.Version), slog.String("file", r.Source.Path), slog.Duration("duration", r.Duration))
		}
	}
	if res.Current, err = provider.GetDBVersion(ctx); err != nil {
		return nil, fmt.Errorf("error reading migration version: %w", err)
	}
	return res, nil
}
