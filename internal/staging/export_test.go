package staging

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// InsertIntoDayPartition inserts rows straight into their day's partition with the INSERT from unnest, for
// BenchmarkInsert's comparison.
func InsertIntoDayPartition(ctx context.Context, pool *pgxpool.Pool, rows []Row) error {
	return insertInto(ctx, pool, dayPartition(rows).Sanitize(), rows)
}

// InsertThroughRoot inserts rows through the partitioned table, for BenchmarkInsert's comparison.
func InsertThroughRoot(ctx context.Context, pool *pgxpool.Pool, rows []Row) error {
	return insert(ctx, pool, rows)
}

// CopyColumns and CopyTypes are what the binary COPY into a day partition sends, for TestCopyTypesMatchTable.
var CopyColumns, CopyTypes = copyColumns, copyTypes
