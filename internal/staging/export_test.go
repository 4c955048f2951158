package staging

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// InsertIntoDayPartition inserts rows straight into their day's partition, for BenchmarkInsert's comparison.
func InsertIntoDayPartition(ctx context.Context, pool *pgxpool.Pool, rows []Row) error {
	return insertInto(ctx, pool, dayPartition(rows), rows)
}
