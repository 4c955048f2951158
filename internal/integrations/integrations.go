// Package integrations stores service integrations: which org receives which service's webhooks at which
// unguessable URL, with which verifier settings and secrets. Secrets are stored encrypted, bound to the
// integration's row; the current and the previous secret (during a grace period) both verify.
package integrations

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// OpaquePrefix starts every integration's opaque id.
const OpaquePrefix = "svi_"

var (
	// ErrNotFound means no such integration.
	ErrNotFound = errors.New("integration not found")
	// ErrUnknownService means the service is not in the catalog.
	ErrUnknownService = errors.New("unknown service")
)

// DB is what this package needs of a connection, pool or transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Integration is a service integration as stored, secrets still encrypted.
type Integration struct {
	ID                      int64           `json:"-"`
	OpaqueID                string          `json:"opaque_id"`
	OrgID                   int64           `json:"-"`
	Service                 string          `json:"service"`
	TableName               string          `json:"table_name"`
	VerifierOverride        json.RawMessage `json:"verifier,omitempty"`
	Config                  json.RawMessage `json:"config,omitempty"`
	BodyLimitBytes          *int64          `json:"body_limit_bytes,omitempty"`
	SecretEnc               *string         `json:"-"`
	PreviousSecretEnc       *string         `json:"-"`
	PreviousSecretExpiresAt *time.Time      `json:"previous_secret_expires_at,omitempty"`
	CreatedAt               time.Time       `json:"created_at"`
	UpdatedAt               time.Time       `json:"updated_at"`
	DeletedAt               *time.Time      `json:"deleted_at,omitempty"`
}

// VerifierConfig is the effective verifier: the service's default scheme, overridden by the integration's own.
func (in *Integration) VerifierConfig() (verify.Config, error) {
	svc, ok := replicator.Lookup(in.Service)
	if !ok {
		return verify.Config{}, fmt.Errorf("%w: %s", ErrUnknownService, in.Service)
	}
	cfg := verify.Config{Scheme: svc.Verifier}
	if len(in.VerifierOverride) > 0 && string(in.VerifierOverride) != "{}" {
		var override verify.Config
		if err := json.Unmarshal(in.VerifierOverride, &override); err != nil {
			return verify.Config{}, fmt.Errorf("error reading verifier override: %w", err)
		}
		cfg = override
	}
	return cfg, nil
}

const columns = `id, opaque_id, org_id, service, table_name, verifier, config, body_limit_bytes::bigint, secret_enc,
	previous_secret_enc, previous_secret_expires_at, created_at, updated_at, deleted_at`

func scan(row pgx.Row) (*Integration, error) {
	in := &Integration{}
	err := row.Scan(&in.ID, &in.OpaqueID, &in.OrgID, &in.Service, &in.TableName, &in.VerifierOverride, &in.Config,
		&in.BodyLimitBytes, &in.SecretEnc, &in.PreviousSecretEnc, &in.PreviousSecretExpiresAt, &in.CreatedAt, &in.UpdatedAt, &in.DeletedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return in, err
}

// CreateParams describe a new integration.
type CreateParams struct {
	OrgID   int64
	Service string
	// Secret to verify with; empty generates one (returned by Create, shown once).
	Secret string
	// VerifierOverride replaces the service's default verifier (nil keeps it).
	VerifierOverride *verify.Config
	// Config is the replicator's configuration (json_v1 needs one; standard_event_v1 takes one optionally).
	Config         json.RawMessage
	BodyLimitBytes *int64
}

// Create adds an integration and returns it with its secret in the clear.
func Create(ctx context.Context, db DB, box secrets.Box, p CreateParams) (*Integration, string, error) {
	svc, err := replicator.Resolve(p.Service, p.Config)
	if err != nil {
		return nil, "", err
	}
	in := &Integration{OrgID: p.OrgID, Service: p.Service, Config: p.Config, BodyLimitBytes: p.BodyLimitBytes}
	if len(in.Config) == 0 {
		in.Config = json.RawMessage("{}")
	}
	in.VerifierOverride = json.RawMessage("{}")
	if p.VerifierOverride != nil {
		if err := p.VerifierOverride.Validate(); err != nil {
			return nil, "", err
		}
		b, _ := json.Marshal(p.VerifierOverride)
		in.VerifierOverride = b
	}
	vcfg, err := in.VerifierConfig()
	if err != nil {
		return nil, "", err
	}
	if svc.RemoteKey.From == replicator.FromDeliveryID && vcfg.Scheme != verify.SchemeStandard {
		// Only the Standard Webhooks verifier records the webhook-id a row would be keyed by: every delivery
		// would fail for want of a key.
		return nil, "", fmt.Errorf("%w: %s keys rows by the webhook-id header, which only the %s verifier records; keep that verifier or key rows by a field of the event with --config '{\"remote_key_path\":\"data.id\"}'",
			replicator.ErrInvalidConfig, p.Service, verify.SchemeStandard)
	}
	secret := p.Secret
	if secret == "" {
		secret = GenerateSecret(vcfg.Scheme)
	}
	if err := verify.ValidateSecret(vcfg, secret); err != nil {
		return nil, "", err
	}
	in.OpaqueID = NewOpaqueID()
	if in.TableName, err = freeTableName(ctx, db, p.OrgID, p.Service); err != nil {
		return nil, "", err
	}
	if vcfg.Scheme != verify.SchemeNone {
		enc, err := box.Encrypt(ctx, SecretBinding(in.OpaqueID, "secret_enc"), []byte(secret))
		if err != nil {
			return nil, "", fmt.Errorf("error encrypting secret: %w", err)
		}
		in.SecretEnc = &enc
	}
	row := db.QueryRow(ctx, `
		INSERT INTO service_integrations (opaque_id, org_id, service, table_name, verifier, config, secret_enc, body_limit_bytes)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		RETURNING `+columns,
		in.OpaqueID, in.OrgID, in.Service, in.TableName, in.VerifierOverride, in.Config, in.SecretEnc, in.BodyLimitBytes)
	created, err := scan(row)
	if err != nil {
		return nil, "", fmt.Errorf("error creating integration: %w", err)
	}
	return created, secret, nil
}

// freeTableName is the service's name, suffixed when the org already has a live table of that name.
func freeTableName(ctx context.Context, db DB, orgID int64, service string) (string, error) {
	rows, err := db.Query(ctx, `SELECT table_name FROM service_integrations WHERE org_id = $1 AND deleted_at IS NULL AND (table_name = $2 OR table_name LIKE $2 || '\_%')`, orgID, service)
	if err != nil {
		return "", fmt.Errorf("error listing table names: %w", err)
	}
	taken, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("error listing table names: %w", err)
	}
	set := map[string]bool{}
	for _, t := range taken {
		set[t] = true
	}
	name := service
	for i := 2; set[name]; i++ {
		name = service + "_" + strconv.Itoa(i)
	}
	return name, nil
}

// SecretBinding binds a secret ciphertext to its integration row and column.
func SecretBinding(opaqueID, column string) secrets.Binding {
	return secrets.Binding{Table: "service_integrations", Column: column, Row: opaqueID}
}

// NewOpaqueID returns "svi_" and 160 random bits in lower-case base32.
func NewOpaqueID() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return OpaquePrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// GenerateSecret makes a secret of the shape a scheme expects.
func GenerateSecret(scheme string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	switch scheme {
	case verify.SchemeStandard, verify.SchemeStripe:
		return "whsec_" + base64.StdEncoding.EncodeToString(b)
	case verify.SchemeBasicAuth:
		return "webhookdb:" + hex.EncodeToString(b)
	default:
		return hex.EncodeToString(b)
	}
}

// ByOpaqueID returns an integration, deleted or not.
func ByOpaqueID(ctx context.Context, db DB, opaqueID string) (*Integration, error) {
	return scan(db.QueryRow(ctx, `SELECT `+columns+` FROM service_integrations WHERE opaque_id = $1`, opaqueID))
}

// ByID returns an integration by its internal id, deleted or not.
func ByID(ctx context.Context, db DB, id int64) (*Integration, error) {
	return scan(db.QueryRow(ctx, `SELECT `+columns+` FROM service_integrations WHERE id = $1`, id))
}

// ChangedSince lists integrations created, updated or deleted at or after t (the ingest cache polls with it).
func ChangedSince(ctx context.Context, db DB, t time.Time) ([]*Integration, error) {
	rows, err := db.Query(ctx, `SELECT `+columns+` FROM service_integrations WHERE updated_at >= $1 ORDER BY updated_at`, t)
	if err != nil {
		return nil, fmt.Errorf("error listing changed integrations: %w", err)
	}
	defer rows.Close()
	var out []*Integration
	for rows.Next() {
		in, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("error reading integration: %w", err)
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// Delete marks an integration deleted: its URL answers 410 Gone from then on.
func Delete(ctx context.Context, db DB, opaqueID string) error {
	tag, err := db.Exec(ctx, `UPDATE service_integrations SET deleted_at = now() WHERE opaque_id = $1 AND deleted_at IS NULL`, opaqueID)
	if err != nil {
		return fmt.Errorf("error deleting integration: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// RollSecret makes newSecret (generated when empty) current and keeps the old one valid for grace.
func RollSecret(ctx context.Context, db DB, box secrets.Box, opaqueID, newSecret string, grace time.Duration) (string, error) {
	in, err := ByOpaqueID(ctx, db, opaqueID)
	if err != nil {
		return "", err
	}
	if in.DeletedAt != nil {
		return "", ErrNotFound
	}
	vcfg, err := in.VerifierConfig()
	if err != nil {
		return "", err
	}
	if newSecret == "" {
		newSecret = GenerateSecret(vcfg.Scheme)
	}
	if err := verify.ValidateSecret(vcfg, newSecret); err != nil {
		return "", err
	}
	enc, err := box.Encrypt(ctx, SecretBinding(opaqueID, "secret_enc"), []byte(newSecret))
	if err != nil {
		return "", fmt.Errorf("error encrypting secret: %w", err)
	}
	var prevEnc *string
	if in.SecretEnc != nil {
		old, err := box.Decrypt(ctx, SecretBinding(opaqueID, "secret_enc"), *in.SecretEnc)
		if err != nil {
			return "", fmt.Errorf("error decrypting current secret: %w", err)
		}
		p, err := box.Encrypt(ctx, SecretBinding(opaqueID, "previous_secret_enc"), old)
		if err != nil {
			return "", fmt.Errorf("error encrypting previous secret: %w", err)
		}
		prevEnc = &p
	}
	_, err = db.Exec(ctx, `UPDATE service_integrations SET secret_enc = $2, previous_secret_enc = $3, previous_secret_expires_at = now() + $4::interval WHERE opaque_id = $1`,
		opaqueID, enc, prevEnc, fmt.Sprintf("%d milliseconds", grace.Milliseconds()))
	if err != nil {
		return "", fmt.Errorf("error storing new secret: %w", err)
	}
	return newSecret, nil
}
