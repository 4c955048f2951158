package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// lockClass is the first key of the session advisory lock a worker holds on the job it runs: a worker that
// dies loses its connection and with it the lock, so another process resumes the job at once from its
// checkpoint.
const lockClass = 0x6266 // "bf"

// highWaterOverlap is how far before a job's start the next incremental job starts: clocks differ, and listing a
// change twice is harmless under the conflict policies.
const highWaterOverlap = 5 * time.Minute

// Run runs the workers and the schedule until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for range s.cfg.Workers {
		g.Go(func() error { s.work(gctx); return nil })
	}
	g.Go(func() error { s.schedule(gctx); return nil })
	return g.Wait()
}

func (s *Service) idle(ctx context.Context) {
	t := time.NewTimer(s.cfg.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-s.wake:
	}
}

func (s *Service) work(ctx context.Context) {
	for ctx.Err() == nil {
		ran, err := s.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "backfill worker", slog.String("error", err.Error()))
		}
		if !ran || err != nil {
			s.idle(ctx)
		}
	}
}

// RunOnce takes up the job of the org served longest ago, if any, and runs it for one slice. It reports
// whether it ran one.
func (s *Service) RunOnce(ctx context.Context) (bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("error acquiring a connection: %w", err)
	}
	defer conn.Release()
	// Fairness: the org whose jobs were taken up longest ago first, then its job taken up longest ago.
	rows, err := conn.Query(ctx, `
		SELECT j.id FROM backfill_jobs j
		WHERE j.state IN ('queued', 'running') AND (j.run_after IS NULL OR j.run_after <= now())
		ORDER BY (SELECT max(o.last_ran_at) FROM backfill_jobs o WHERE o.org_id = j.org_id AND o.state IN ('queued', 'running')) ASC NULLS FIRST,
			j.last_ran_at ASC NULLS FIRST, j.id
		LIMIT 20`)
	if err != nil {
		return false, fmt.Errorf("error listing backfill jobs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return false, fmt.Errorf("error listing backfill jobs: %w", err)
	}
	for _, id := range ids {
		var locked bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, $2::int4)`, lockClass, int32(id)).Scan(&locked); err != nil {
			return false, fmt.Errorf("error locking backfill job %d: %w", id, err)
		}
		if !locked {
			continue
		}
		err := s.runLocked(ctx, conn.Conn(), id)
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if _, uerr := conn.Exec(unlockCtx, `SELECT pg_advisory_unlock($1::int4, $2::int4)`, lockClass, int32(id)); uerr != nil {
			// A connection that may still hold the lock must not go back to the pool.
			_ = conn.Conn().Close(unlockCtx)
		}
		cancel()
		return true, err
	}
	return false, nil
}

// claimed is a job as a worker runs it.
type claimed struct {
	id, orgID, integrationID int64
	kind, cursor             string
	vendor                   string // the vendor's name, for metrics (set once its client is built)
	since                    *time.Time
	startedAt                time.Time
	transientFailures        int
}

// runLocked runs job id for one slice; the caller holds its advisory lock.
func (s *Service) runLocked(ctx context.Context, conn *pgx.Conn, id int64) error {
	j := &claimed{id: id}
	err := conn.QueryRow(ctx, `UPDATE backfill_jobs SET state = 'running', started_at = coalesce(started_at, now()), last_ran_at = now()
		WHERE id = $1 AND state IN ('queued', 'running') AND (run_after IS NULL OR run_after <= now())
		RETURNING org_id, integration_id, kind, cursor, since, started_at, transient_failures`, id).
		Scan(&j.orgID, &j.integrationID, &j.kind, &j.cursor, &j.since, &j.startedAt, &j.transientFailures)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // finished or canceled since it was listed
	}
	if err != nil {
		return fmt.Errorf("error taking up backfill job %d: %w", id, err)
	}
	client, err := s.jobClient(ctx, j)
	if err != nil {
		return s.failed(ctx, conn, j, err)
	}
	// At least one page per slice, however short.
	for deadline := time.Now().Add(s.cfg.Slice); ; {
		req := PageRequest{Cursor: j.cursor}
		if j.kind == KindIncremental && j.since != nil {
			req.Since = *j.since
		}
		page, err := client.Page(ctx, req)
		if err == nil && !page.Done && (page.Next == "" || page.Next == j.cursor) {
			err = &BadAnswerError{Vendor: "the vendor", Page: pageName(page.Path, j.cursor), Status: 200, Reason: "more pages but no new cursor"}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return s.failed(ctx, conn, j, err)
		}
		if err := s.waitRate(ctx, len(page.Objects)); err != nil {
			return nil
		}
		more, err := s.storePage(ctx, conn, j, page, time.Now())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return s.failed(ctx, conn, j, &TransientError{Err: err})
		}
		if !more || !time.Now().Before(deadline) {
			return nil
		}
	}
}

// waitRate spends n tokens of the process's staging rate, in bursts the limiter allows.
func (s *Service) waitRate(ctx context.Context, n int) error {
	for n > 0 {
		k := min(n, s.limiter.Burst())
		if err := s.limiter.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (s *Service) jobClient(ctx context.Context, j *claimed) (Vendor, error) {
	in, err := integrations.ByID(ctx, s.pool, j.integrationID)
	if err != nil {
		return nil, err
	}
	v, err := vendorOf(in.Service)
	if err != nil {
		return nil, err
	}
	j.vendor = v.name
	c, err := readCredentials(ctx, s.pool, j.integrationID)
	if err != nil {
		return nil, err
	}
	creds, err := c.decrypt(ctx, s.cfg.Box, j.integrationID)
	if err != nil {
		return nil, &TransientError{Err: err} // Vault may be back soon
	}
	return s.client(v, in, creds, c.BaseURL, c.Options, s.cfg.HTTP)
}

// storePage stores a page's objects and its checkpoint in one transaction; the last page also finishes the job
// and saves the high-water mark. It reports whether the job goes on.
func (s *Service) storePage(ctx context.Context, conn *pgx.Conn, j *claimed, page *Page, fetchedAt time.Time) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("error beginning: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var state, cursor string
	var deleted bool
	err = tx.QueryRow(ctx, `SELECT j.state, j.cursor, i.deleted_at IS NOT NULL FROM backfill_jobs j
		JOIN service_integrations i ON i.id = j.integration_id WHERE j.id = $1 FOR UPDATE OF j`, j.id).Scan(&state, &cursor, &deleted)
	if err != nil {
		return false, fmt.Errorf("error locking backfill job %d: %w", j.id, err)
	}
	if deleted {
		if err := CancelIntegration(ctx, tx, j.integrationID, "the integration was deleted"); err != nil {
			return false, err
		}
		return false, tx.Commit(ctx)
	}
	if state != StateRunning || cursor != j.cursor {
		return false, nil // canceled, or another worker moved it on: store nothing
	}
	rows := make([]staging.Row, len(page.Objects))
	for i, o := range page.Objects {
		rows[i] = staging.Row{ReceivedAt: fetchedAt, OrgID: j.orgID, IntegrationID: j.integrationID, Method: "GET",
			Path: page.Path, Query: page.Query, ContentType: "application/json", Headers: []byte("{}"), Body: o, Accepted: true,
			Source: staging.SourceBackfill, BackfillJobID: j.id}
	}
	if err := staging.InsertTx(ctx, tx, rows); err != nil {
		return false, err
	}
	if page.Done {
		_, err = tx.Exec(ctx, `UPDATE backfill_jobs SET cursor = '', pages_done = pages_done + 1, items_done = items_done + $2,
			state = 'succeeded', finished_at = now(), transient_failures = 0, run_after = NULL, last_error = NULL, error_status = NULL
			WHERE id = $1`, j.id, len(rows))
		if err == nil {
			_, err = tx.Exec(ctx, `UPDATE backfill_credentials SET high_water = $2,
				next_run_at = CASE WHEN every IS NULL THEN NULL ELSE now() + every END WHERE integration_id = $1`,
				j.integrationID, j.startedAt.Add(-highWaterOverlap))
		}
	} else {
		_, err = tx.Exec(ctx, `UPDATE backfill_jobs SET cursor = $2, pages_done = pages_done + 1, items_done = items_done + $3,
			transient_failures = 0, run_after = NULL, last_error = NULL, error_status = NULL WHERE id = $1`, j.id, page.Next, len(rows))
	}
	if err != nil {
		return false, fmt.Errorf("error checkpointing backfill job %d: %w", j.id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("error committing page of backfill job %d: %w", j.id, err)
	}
	s.metrics.objects.WithLabelValues(j.vendor).Add(float64(len(rows)))
	s.metrics.pages.WithLabelValues(j.vendor).Inc()
	if page.Done {
		s.metrics.finished.WithLabelValues(j.vendor, StateSucceeded).Inc()
	}
	j.cursor = page.Next
	return !page.Done, nil
}

// failed records an error: a transient one sends the job back to the queue for later (failing it after too many
// in a row), anything else fails it with the vendor's reason for the org to read.
func (s *Service) failed(ctx context.Context, conn *pgx.Conn, j *claimed, cause error) error {
	ctx = context.WithoutCancel(ctx)
	msg := cause.Error()
	var status *int
	var ve *VendorError
	var be *BadAnswerError
	switch {
	case errors.As(cause, &ve):
		status = &ve.Status
	case errors.As(cause, &be):
		status = &be.Status
	}
	var te *TransientError
	if errors.As(cause, &te) && j.transientFailures+1 < s.cfg.MaxTransientFailures {
		wait := min(s.cfg.RetryAfter<<min(j.transientFailures, 10), time.Hour)
		_, err := conn.Exec(ctx, `UPDATE backfill_jobs SET state = 'queued', transient_failures = transient_failures + 1,
			run_after = now() + $2 * interval '1 microsecond', last_error = $3, error_status = $4
			WHERE id = $1 AND state = 'running'`, j.id, wait.Microseconds(), msg, status)
		s.logger.WarnContext(ctx, "backfill job will retry", slog.Int64("job_id", j.id), slog.String("error", msg), slog.Duration("retry_in", wait))
		s.metrics.retries.WithLabelValues(j.vendor).Inc()
		if err != nil {
			return fmt.Errorf("error recording backfill job %d's failure: %w", j.id, err)
		}
		return nil
	}
	_, err := conn.Exec(ctx, `UPDATE backfill_jobs SET state = 'failed', finished_at = now(), last_error = $2, error_status = $3
		WHERE id = $1 AND state = 'running'`, j.id, msg, status)
	s.logger.WarnContext(ctx, "backfill job failed", slog.Int64("job_id", j.id), slog.String("error", msg))
	s.metrics.finished.WithLabelValues(j.vendor, StateFailed).Inc()
	if err != nil {
		return fmt.Errorf("error recording backfill job %d's failure: %w", j.id, err)
	}
	if ve != nil && (ve.Status == http.StatusUnauthorized || ve.Status == http.StatusForbidden) && s.cfg.OnCredentialsFailed != nil {
		s.cfg.OnCredentialsFailed(ctx, j.orgID, j.integrationID, cause)
	}
	return nil
}

// schedule queues incremental jobs of integrations whose schedule is due, and cancels the jobs (and forgets the
// credentials) of deleted integrations.
func (s *Service) schedule(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.ScheduleOnce(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "backfill schedule", slog.String("error", err.Error()))
		}
		t := time.NewTimer(5 * s.cfg.Poll)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// ScheduleOnce is one pass of the schedule.
func (s *Service) ScheduleOnce(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `UPDATE backfill_jobs j SET state = 'canceled', finished_at = now(), last_error = 'the integration was deleted'
		FROM service_integrations i WHERE i.id = j.integration_id AND i.deleted_at IS NOT NULL AND j.state IN ('queued', 'running')`); err != nil {
		return fmt.Errorf("error canceling jobs of deleted integrations: %w", err)
	}
	// A deleted integration's (or org's) credentials are of no use any more: forget them.
	if _, err := s.pool.Exec(ctx, `DELETE FROM backfill_credentials c USING service_integrations i
		WHERE i.id = c.integration_id AND i.deleted_at IS NOT NULL`); err != nil {
		return fmt.Errorf("error forgetting credentials of deleted integrations: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT c.integration_id, i.org_id, i.service FROM backfill_credentials c
		JOIN service_integrations i ON i.id = c.integration_id
		WHERE c.every IS NOT NULL AND c.next_run_at <= now() AND i.deleted_at IS NULL`)
	if err != nil {
		return fmt.Errorf("error listing due backfills: %w", err)
	}
	type due struct {
		integrationID, orgID int64
		service              string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (due, error) {
		var d due
		err := r.Scan(&d.integrationID, &d.orgID, &d.service)
		return d, err
	})
	if err != nil {
		return fmt.Errorf("error listing due backfills: %w", err)
	}
	for _, d := range list {
		_, err := s.start(ctx, s.pool, d.orgID, d.integrationID, d.service, false, "schedule")
		if err != nil && !errors.Is(err, ErrJobActive) {
			s.logger.WarnContext(ctx, "scheduled backfill not queued", slog.Int64("integration_id", d.integrationID), slog.String("error", err.Error()))
		}
		if _, err := s.pool.Exec(ctx, `UPDATE backfill_credentials SET next_run_at = now() + every WHERE integration_id = $1`, d.integrationID); err != nil {
			return fmt.Errorf("error moving the schedule on: %w", err)
		}
	}
	return nil
}
