package staging

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// InsertTx writes rows within tx, so that they commit with whatever else the caller records (a backfill's page
// and its checkpoint). A transaction cannot retry a statement, so the partitions of the rows' days are made
// sure of first.
func InsertTx(ctx context.Context, tx pgx.Tx, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	if err := ensurePartitionsFor(ctx, tx, rows); err != nil {
		return fmt.Errorf("error preparing staging partitions: %w", err)
	}
	return insert(ctx, tx, rows)
}
