package backfill

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

var (
	// ErrNotFound means no such job (or not the org's).
	ErrNotFound = errors.New("backfill job not found")
	// ErrNoCredentials means the integration has no backfill credentials.
	ErrNoCredentials = errors.New("the integration has no backfill credentials (integrations update ID --backfill-key K)")
	// ErrCredentials means credentials the vendor (or the shape of its keys) refuses.
	ErrCredentials = errors.New("invalid backfill credentials")
	// ErrJobActive means the integration already has a queued or running job.
	ErrJobActive = errors.New("the integration already has a backfill job queued or running")
	// ErrFinished means the job already finished.
	ErrFinished = errors.New("the backfill job already finished")
)

// DB is what this package needs of a connection, pool or transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Job states and kinds.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCanceled  = "canceled"

	KindFull        = "full"
	KindIncremental = "incremental"
)

// Job is a backfill job as the API shows it.
type Job struct {
	ID            int64      `json:"id"`
	OrgID         int64      `json:"-"`
	IntegrationID int64      `json:"-"`
	Integration   string     `json:"integration"`
	Service       string     `json:"service"`
	Kind          string     `json:"kind"`
	State         string     `json:"state"`
	Since         *time.Time `json:"since,omitempty"`
	Cursor        string     `json:"-"`
	PagesDone     int64      `json:"pages_done"`
	ItemsDone     int64      `json:"items_done"`
	RequestedBy   string     `json:"requested_by"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     *time.Time `json:"started_at,omitempty"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
	RunAfter      *time.Time `json:"retry_at,omitempty"`
	LastError     *string    `json:"last_error,omitempty"`
	ErrorStatus   *int       `json:"error_status,omitempty"`
}

// Active reports whether the job is queued or running.
func (j *Job) Active() bool { return j.State == StateQueued || j.State == StateRunning }

const jobColumns = `j.id, j.org_id, j.integration_id, i.opaque_id, i.service, j.kind, j.state, j.since, j.cursor, j.pages_done,
	j.items_done, j.requested_by, j.created_at, j.started_at, j.finished_at, j.run_after, j.last_error, j.error_status`

const jobFrom = ` FROM backfill_jobs j JOIN service_integrations i ON i.id = j.integration_id `

func scanJob(row pgx.Row) (*Job, error) {
	j := &Job{}
	err := row.Scan(&j.ID, &j.OrgID, &j.IntegrationID, &j.Integration, &j.Service, &j.Kind, &j.State, &j.Since, &j.Cursor,
		&j.PagesDone, &j.ItemsDone, &j.RequestedBy, &j.CreatedAt, &j.StartedAt, &j.FinishedAt, &j.RunAfter, &j.LastError, &j.ErrorStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return j, err
}

func collectJobs(rows pgx.Rows) ([]*Job, error) {
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("error reading backfill job: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// GetJob returns one of an org's jobs.
func GetJob(ctx context.Context, db DB, orgID, id int64) (*Job, error) {
	j, err := scanJob(db.QueryRow(ctx, `SELECT `+jobColumns+jobFrom+`WHERE j.id = $1 AND j.org_id = $2`, id, orgID))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("error reading backfill job %d: %w", id, err)
	}
	return j, err
}

// ListJobs returns an org's newest jobs (of one integration when integrationID is not 0).
func ListJobs(ctx context.Context, db DB, orgID, integrationID int64, limit int) ([]*Job, error) {
	rows, err := db.Query(ctx, `SELECT `+jobColumns+jobFrom+`WHERE j.org_id = $1 AND ($2 = 0 OR j.integration_id = $2)
		ORDER BY j.id DESC LIMIT $3`, orgID, integrationID, limit)
	if err != nil {
		return nil, fmt.Errorf("error listing backfill jobs: %w", err)
	}
	return collectJobs(rows)
}

// FailedJobs returns the org's integrations' latest jobs where they failed (a later job that did not fail hides
// an earlier failure): what `errors list` shows beside the fanout's failed changes.
func FailedJobs(ctx context.Context, db DB, orgID, integrationID int64) ([]*Job, error) {
	rows, err := db.Query(ctx, `SELECT * FROM (SELECT DISTINCT ON (j.integration_id) `+jobColumns+jobFrom+`
		WHERE j.org_id = $1 AND ($2 = 0 OR j.integration_id = $2) AND i.deleted_at IS NULL
		ORDER BY j.integration_id, j.id DESC) latest WHERE state = 'failed' ORDER BY id DESC`, orgID, integrationID)
	if err != nil {
		return nil, fmt.Errorf("error listing failed backfill jobs: %w", err)
	}
	return collectJobs(rows)
}

// Settings are an integration's backfill settings as shown: never the credentials, only a fingerprint.
type Settings struct {
	CredentialsSet bool   `json:"credentials_set"`
	Fingerprint    string `json:"fingerprint,omitempty"`
	BaseURL        string `json:"base_url,omitempty"`
	// Options are the vendor client's (GitHub's repositories, ...).
	Options    json.RawMessage `json:"options,omitempty"`
	Every      string          `json:"every,omitempty"`
	NextRunAt  *time.Time      `json:"next_run_at,omitempty"`
	HighWater  *time.Time      `json:"high_water,omitempty"`
	VerifiedAt *time.Time      `json:"verified_at,omitempty"`
}

// storedCredentials is a backfill_credentials row: the ciphertexts beside what Settings shows.
type storedCredentials struct {
	keyEnc    string
	secretEnc *string
	baseURL   *string
	Settings
}

func readCredentials(ctx context.Context, db DB, integrationID int64) (*storedCredentials, error) {
	c := &storedCredentials{}
	var everyMicros *int64
	err := db.QueryRow(ctx, `SELECT key_enc, secret_enc, fingerprint, base_url, options, (extract(epoch FROM every) * 1000000)::bigint,
		next_run_at, high_water, verified_at FROM backfill_credentials WHERE integration_id = $1`, integrationID).
		Scan(&c.keyEnc, &c.secretEnc, &c.Fingerprint, &c.baseURL, &c.Options, &everyMicros, &c.NextRunAt, &c.HighWater, &c.VerifiedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("error reading backfill credentials: %w", err)
	}
	c.CredentialsSet = true
	if c.baseURL != nil {
		c.BaseURL = *c.baseURL
	}
	if string(c.Options) == "{}" {
		c.Options = nil
	}
	if everyMicros != nil {
		d := time.Duration(*everyMicros) * time.Microsecond
		c.Every = d.String()
	}
	return c, nil
}

// GetSettings returns an integration's backfill settings (CredentialsSet false when there are none).
func GetSettings(ctx context.Context, db DB, integrationID int64) (*Settings, error) {
	c, err := readCredentials(ctx, db, integrationID)
	if errors.Is(err, ErrNoCredentials) {
		return &Settings{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &c.Settings, nil
}

// binding binds a credential ciphertext to its row and column.
func binding(integrationID int64, column string) secrets.Binding {
	return secrets.Binding{Table: "backfill_credentials", Column: column, Row: strconv.FormatInt(integrationID, 10)}
}

// fingerprint is a short digest of the credentials: enough to tell two apart, nothing to recover them from.
func fingerprint(c Credentials) string {
	h := sha256.Sum256([]byte(c.Key + "\x00" + c.Secret))
	return "sha256:" + hex.EncodeToString(h[:])[:12]
}

func (c *storedCredentials) decrypt(ctx context.Context, box secrets.Box, integrationID int64) (Credentials, error) {
	key, err := box.Decrypt(ctx, binding(integrationID, "key_enc"), c.keyEnc)
	if err != nil {
		return Credentials{}, fmt.Errorf("error decrypting the backfill key: %w", err)
	}
	out := Credentials{Key: string(key)}
	if c.secretEnc != nil {
		s, err := box.Decrypt(ctx, binding(integrationID, "secret_enc"), *c.secretEnc)
		if err != nil {
			return Credentials{}, fmt.Errorf("error decrypting the backfill secret: %w", err)
		}
		out.Secret = string(s)
	}
	return out, nil
}

// createJob queues a job; ErrJobActive when the integration has one queued or running.
func createJob(ctx context.Context, db DB, orgID, integrationID int64, kind string, since *time.Time, by string) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, `INSERT INTO backfill_jobs (org_id, integration_id, kind, since, requested_by)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`, orgID, integrationID, kind, since, by).Scan(&id)
	if pgerr.Is(err, pgerrcode.UniqueViolation) {
		return 0, ErrJobActive
	}
	if err != nil {
		return 0, fmt.Errorf("error creating backfill job: %w", err)
	}
	return id, nil
}

// Cancel cancels one of an org's jobs; ErrFinished when it already finished. A worker running it stops before
// its next page is stored.
func Cancel(ctx context.Context, db DB, orgID, id int64) (*Job, error) {
	tag, err := db.Exec(ctx, `UPDATE backfill_jobs SET state = 'canceled', finished_at = now(), last_error = 'canceled'
		WHERE id = $1 AND org_id = $2 AND state IN ('queued', 'running')`, id, orgID)
	if err != nil {
		return nil, fmt.Errorf("error canceling backfill job %d: %w", id, err)
	}
	j, err := GetJob(ctx, db, orgID, id)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		return j, ErrFinished
	}
	return j, nil
}

// CancelIntegration cancels an integration's active job (the integration is being deleted).
func CancelIntegration(ctx context.Context, db DB, integrationID int64, reason string) error {
	_, err := db.Exec(ctx, `UPDATE backfill_jobs SET state = 'canceled', finished_at = now(), last_error = $2
		WHERE integration_id = $1 AND state IN ('queued', 'running')`, integrationID, reason)
	if err != nil {
		return fmt.Errorf("error canceling backfill jobs: %w", err)
	}
	return nil
}
