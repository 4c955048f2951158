package staging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Resync is a request to re-apply every accepted delivery received in [Since, Until): the recovery after the
// fanout's slot was lost (or re-created), when the slot no longer holds what the org databases lack.
type Resync struct {
	ID         int64
	Since      time.Time
	Until      time.Time
	Copied     int64
	CreatedAt  time.Time
	FinishedAt *time.Time
}

// StartResync records a resync of the accepted deliveries received since a time, up to now. Partitions it
// still has to read are kept by upkeep until it is finished, whatever the slot says.
func StartResync(ctx context.Context, db DB, since time.Time) (*Resync, error) {
	r := &Resync{Since: since}
	err := db.QueryRow(ctx, `INSERT INTO staging.resyncs (since) VALUES ($1) RETURNING id, until, created_at`, since).Scan(&r.ID, &r.Until, &r.CreatedAt)
	if err != nil {
		return nil, fmt.Errorf("error recording the resync: %w", err)
	}
	return r, nil
}

// Resyncs lists resyncs, newest first.
func Resyncs(ctx context.Context, db DB) ([]Resync, error) {
	rows, err := db.Query(ctx, `SELECT id, since, until, copied, created_at, finished_at FROM staging.resyncs ORDER BY id DESC LIMIT 100`)
	if err != nil {
		return nil, fmt.Errorf("error listing resyncs: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Resync])
	if err != nil {
		return nil, fmt.Errorf("error listing resyncs: %w", err)
	}
	return out, nil
}

// ResyncStep copies the next page of a pending resync in one transaction with its checkpoint, so a crash
// repeats no page and skips none; the resync's row is locked for the page, so processes that run resyncs at
// once take turns. It returns how many deliveries it copied and whether the resync is finished.
func ResyncStep(ctx context.Context, pool *pgxpool.Pool, id int64) (copied int64, done bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var since, until time.Time
		var afterAt *time.Time
		var afterID *int64
		var finished *time.Time
		err := tx.QueryRow(ctx, `SELECT since, until, after_received_at, after_id, finished_at FROM staging.resyncs WHERE id = $1 FOR UPDATE`, id).
			Scan(&since, &until, &afterAt, &afterID, &finished)
		if err != nil {
			return fmt.Errorf("error reading resync %d: %w", id, err)
		}
		if finished != nil {
			done = true
			return nil
		}
		after := Ref{ReceivedAt: since, ID: 0}
		if afterAt != nil && afterID != nil {
			after = Ref{ReceivedAt: *afterAt, ID: *afterID}
		}
		rows, err := tx.Query(ctx, `SELECT `+fullColumns+` FROM staging.webhooks
			WHERE accepted AND replay_of IS NULL AND received_at < $1 AND (received_at, id) > ($2, $3)
			ORDER BY received_at, id LIMIT $4`, until, after.ReceivedAt, after.ID, copyPageRows)
		if err != nil {
			return fmt.Errorf("error reading resync %d: %w", id, err)
		}
		page, err := collectFull(rows)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			done = true
			_, err := tx.Exec(ctx, `UPDATE staging.resyncs SET finished_at = now() WHERE id = $1`, id)
			return err
		}
		if err := storeCopies(ctx, tx, page, SourceResync); err != nil {
			return err
		}
		last := page[len(page)-1]
		copied = int64(len(page))
		_, err = tx.Exec(ctx, `UPDATE staging.resyncs SET after_received_at = $2, after_id = $3, copied = copied + $4 WHERE id = $1`,
			id, last.ReceivedAt, last.ID, copied)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("error resyncing: %w", err)
	}
	return copied, done, nil
}

// RunResync steps a resync until it is finished, reporting progress after each page.
func RunResync(ctx context.Context, pool *pgxpool.Pool, id int64, progress func(copied int64)) error {
	var total int64
	for {
		n, done, err := ResyncStep(ctx, pool, id)
		if err != nil {
			return err
		}
		total += n
		if progress != nil && n > 0 {
			progress(total)
		}
		if done {
			return nil
		}
	}
}

// RunPendingResyncs finishes every pending resync (a resync started by `fanout resync` whose process stopped is
// taken up by maintenance).
func RunPendingResyncs(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	rows, err := pool.Query(ctx, `SELECT id FROM staging.resyncs WHERE finished_at IS NULL ORDER BY id`)
	if err != nil {
		return fmt.Errorf("error listing pending resyncs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("error listing pending resyncs: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if err := RunResync(ctx, pool, id, nil); err != nil {
			errs = append(errs, err)
			continue
		}
		logger.InfoContext(ctx, "resync finished", slog.Int64("resync_id", id))
	}
	return errors.Join(errs...)
}

// pendingResyncNeeds reports whether a pending resync still has to read rows received before `to`.
func pendingResyncNeeds(ctx context.Context, db DB, to time.Time) (bool, error) {
	var needed bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM staging.resyncs WHERE finished_at IS NULL AND since < $1
		AND coalesce(after_received_at, since) < $1)`, to).Scan(&needed)
	if err != nil {
		return false, fmt.Errorf("error checking pending resyncs: %w", err)
	}
	return needed, nil
}
