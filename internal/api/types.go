package api

import (
	"encoding/json"
	"time"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// The response bodies of the API. Handlers write them and the CLI decodes into them, so both sides share one
// definition of every answer; docs/openapi.yaml describes the same shapes. Besides these, answers use
// Credential, Error (in ErrorEnvelope), Org, fanout.ChangeError and fanout.Status.

// ErrorEnvelope is the body of every error answer.
type ErrorEnvelope struct {
	Error *Error `json:"error"`
}

// Me answers GET /me.
type Me struct {
	User *accounts.User `json:"user"`
	Orgs []*Org         `json:"orgs"`
}

// OrgList answers GET /orgs.
type OrgList struct {
	Orgs []*Org `json:"orgs"`
}

// OrgEnvelope answers the single-org routes.
type OrgEnvelope struct {
	Org *Org `json:"org"`
}

// Deleted answers the deletion of an org (its key) or of an integration (its opaque id, with a note).
type Deleted struct {
	Deleted string `json:"deleted"`
	Note    string `json:"note,omitempty"`
}

// Member is one member of an org.
type Member struct {
	Email   string    `json:"email"`
	Role    string    `json:"role"`
	AddedAt time.Time `json:"added_at"`
}

// MemberList answers GET /orgs/{org}/members.
type MemberList struct {
	Members []Member `json:"members"`
}

// MemberEnvelope answers adding a member and changing a role.
type MemberEnvelope struct {
	Member Member `json:"member"`
}

// Removed answers removing a member (their email).
type Removed struct {
	Removed string `json:"removed"`
}

// TokenList answers GET /tokens.
type TokenList struct {
	Tokens []accounts.Token `json:"tokens"`
}

// TokenCreated answers POST /tokens; Secret is shown only this once.
type TokenCreated struct {
	Token  *accounts.Token `json:"token"`
	Secret string          `json:"secret"`
}

// Revoked answers revoking a token (its id).
type Revoked struct {
	Revoked int64 `json:"revoked"`
}

// Service is a catalog entry; Columns and DDL only in GET /services/{name}.
type Service struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Verifier    string          `json:"verifier"`
	Policy      string          `json:"policy"`
	RemoteKey   string          `json:"remote_key"`
	Columns     []ServiceColumn `json:"columns,omitempty"`
	DDL         []string        `json:"ddl,omitempty"`
}

// ServiceColumn is one typed column of a service's table.
type ServiceColumn struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Indexed bool   `json:"indexed"`
}

// ServiceList answers GET /services.
type ServiceList struct {
	Services []Service `json:"services"`
}

// ServiceEnvelope answers GET /services/{name}.
type ServiceEnvelope struct {
	Service Service `json:"service"`
}

// Integration is a service integration as the API shows it.
type Integration struct {
	OpaqueID       string          `json:"opaque_id"`
	Service        string          `json:"service"`
	TableName      string          `json:"table_name"`
	WebhookURL     string          `json:"webhook_url"`
	Verifier       verify.Config   `json:"verifier"`
	Config         json.RawMessage `json:"config"`
	BodyLimitBytes *int64          `json:"body_limit_bytes,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
}

// IntegrationList answers GET /orgs/{org}/integrations.
type IntegrationList struct {
	Integrations []Integration `json:"integrations"`
}

// IntegrationEnvelope answers reading and updating an integration.
type IntegrationEnvelope struct {
	Integration Integration `json:"integration"`
}

// IntegrationCreated answers creating an integration; Secret is shown only this once.
type IntegrationCreated struct {
	Integration Integration `json:"integration"`
	Secret      string      `json:"secret"`
}

// SecretRolled answers roll-secret: the new secret (shown once) and until when the previous one still works.
type SecretRolled struct {
	Integration        Integration `json:"integration"`
	Secret             string      `json:"secret"`
	PreviousValidUntil time.Time   `json:"previous_valid_until"`
}

// IntegrationStats answers GET /orgs/{org}/integrations/{opaque_id}/stats.
type IntegrationStats struct {
	Integration       Integration `json:"integration"`
	AcceptedLast7d    int64       `json:"accepted_last_7d"`
	RejectedLast7d    int64       `json:"rejected_last_7d"`
	RecentDeliveries  []Delivery  `json:"recent_deliveries"`
	CountsWindowStart time.Time   `json:"counts_window_start"`
}

// SQLResult is the body of POST /orgs/{org}/db/sql. The handler streams it field by field (rows as they
// arrive), so these tags only read it: the answer has Error when the query failed after rows were sent, and
// then neither Truncated nor MaxRows. Truncated says rows were left out; TruncatedBy says which cap cut them
// ("max_rows" or "max_bytes", absent otherwise).
type SQLResult struct {
	Columns     []string `json:"columns"`
	Rows        [][]any  `json:"rows"`
	RowCount    int      `json:"row_count"`
	Truncated   bool     `json:"truncated"`
	TruncatedBy string   `json:"truncated_by,omitempty"`
	MaxRows     int      `json:"max_rows"`
	MaxBytes    int      `json:"max_bytes"`
	Error       string   `json:"error"`
}

// Table is one table of an org's database.
type Table struct {
	Name         string `json:"name"`
	EstimateRows int64  `json:"estimated_rows"`
}

// TableList answers GET /orgs/{org}/db/tables.
type TableList struct {
	Tables []Table `json:"tables"`
}

// Delivery is one stored webhook request; headers and body only in GET /orgs/{org}/webhooks/{id}.
type Delivery struct {
	ID            int64             `json:"id"`
	ReceivedAt    time.Time         `json:"received_at"`
	Integration   string            `json:"integration"`
	Service       string            `json:"service"`
	DeliveryID    *string           `json:"delivery_id"`
	Method        string            `json:"method"`
	Path          string            `json:"path"`
	Outcome       string            `json:"outcome"`
	Reason        *string           `json:"reason,omitempty"`
	ReplayOf      *int64            `json:"replay_of,omitempty"`
	Source        string            `json:"source,omitempty"`
	BackfillJobID *int64            `json:"backfill_job_id,omitempty"`
	Bytes         int               `json:"bytes"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          *string           `json:"body,omitempty"`
	BodyBase64    []byte            `json:"body_base64,omitempty"`
	BodyTruncated bool              `json:"body_truncated,omitempty"`
	ContentType   string            `json:"content_type,omitempty"`
	Query         string            `json:"query,omitempty"`
}

// DeliveryList answers GET /orgs/{org}/webhooks.
type DeliveryList struct {
	Webhooks []Delivery `json:"webhooks"`
}

// DeliveryEnvelope answers GET /orgs/{org}/webhooks/{id}.
type DeliveryEnvelope struct {
	Webhook Delivery `json:"webhook"`
}

// ReplayResult answers POST /orgs/{org}/replay.
type ReplayResult struct {
	Replayed int64     `json:"replayed"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
}

// ErrorList answers GET /orgs/{org}/errors.
type ErrorList struct {
	Errors []fanout.ChangeError `json:"errors"`
	// BackfillJobs are the integrations' latest backfill jobs where they failed (the vendor's reason in
	// last_error).
	BackfillJobs []*backfill.Job `json:"backfill_jobs,omitempty"`
}

// RetryResult answers POST /orgs/{org}/errors/retry and /orgs/{org}/errors/{id}/retry: how many changes were
// put back in line.
type RetryResult struct {
	Retrying int64 `json:"retrying"`
}

// Skipped answers POST /orgs/{org}/errors/{id}/skip: the failed change dropped for good.
type Skipped struct {
	Skipped int64 `json:"skipped"`
}

// ServerView is a registered database server (its admin URL is never shown).
type ServerView struct {
	Name       string    `json:"name"`
	PublicHost string    `json:"public_host"`
	PublicPort int       `json:"public_port"`
	SSLMode    string    `json:"sslmode"`
	CACert     bool      `json:"ca_cert"` // a CA certificate is stored (verify modes)
	Orgs       int       `json:"orgs"`
	CreatedAt  time.Time `json:"created_at"`
}

// ServerList answers GET /admin/servers.
type ServerList struct {
	Servers []ServerView `json:"servers"`
}

// ServerEnvelope answers POST /admin/servers.
type ServerEnvelope struct {
	Server ServerView `json:"server"`
}

// UserCreated answers POST /admin/users; Token is the new user's first API token, shown only this once.
type UserCreated struct {
	User  *accounts.User `json:"user"`
	Token string         `json:"token"`
}

// KeyRotation answers POST /admin/keys/rotate: every value is now under Version; MinDecryptionVersion is what
// the key's minimum decryption version was raised to (0 when the encryption has no such setting).
type KeyRotation struct {
	Version              int                    `json:"version"`
	Columns              []secrets.ColumnReport `json:"columns"`
	MinDecryptionVersion int                    `json:"min_decryption_version"`
}

// OrgLimits are what a server holds an org's read-only logins to: a query running longer, or a session idle in
// a transaction longer, is ended by the next maintenance pass (within a minute).
type OrgLimits struct {
	QueryLimit             string `json:"query_limit,omitempty"`
	IdleInTransactionLimit string `json:"idle_in_transaction_limit,omitempty"`
}
