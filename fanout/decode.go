package fanout

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// position orders staging rows: the commit LSN of their transaction, then their ordinal in it. Logical
// decoding replays a transaction's rows in the same order, so a position names the same row on every replay.
type position struct {
	lsn pglogrepl.LSN
	seq int32
}

func (p position) after(q position) bool {
	return p.lsn > q.lsn || (p.lsn == q.lsn && p.seq > q.seq)
}

// change is one accepted staging row on its way to an org database.
type change struct {
	pos        position
	txn        *txnState // nil for changes read back from fanout.parked_changes
	webhookID  int64
	receivedAt time.Time
	// originalReceivedAt is when a copy's original arrived (zero for an original); see deliveredAt.
	originalReceivedAt time.Time
	orgID              int64
	integrationID      int64
	deliveryID         string // "" when staging's delivery_id is NULL
	contentType        string
	headers            []byte // JSON object: canonical header name -> value
	body               []byte
	// source is the staging row's (webhook, backfill, replay, resync); backfillJobID its backfill job or 0.
	source        staging.Source
	backfillJobID int64
	size          int64
}

// changeOverhead approximates the memory of a change besides its variable-length fields.
const changeOverhead = 160

// relation is what the consumer needs of a Relation message: where staging.webhooks keeps each column.
type relation struct {
	id              uint32
	namespace, name string
	ncols           int
	// column indexes
	colID, colReceivedAt, colOrgID, colIntegrationID, colDeliveryID, colContentType, colHeaders, colBody int
	// colOriginalReceivedAt, colSource and colBackfillJobID are -1 on a stream from before the column existed.
	colOriginalReceivedAt, colSource, colBackfillJobID int
}

var errNotStaging = errors.New("not the staging table")

func newRelation(m *pglogrepl.RelationMessage) (*relation, error) {
	r := &relation{id: m.RelationID, namespace: m.Namespace, name: m.RelationName, ncols: len(m.Columns)}
	if m.Namespace != "staging" || m.RelationName != "webhooks" {
		return r, errNotStaging
	}
	idx := map[string]int{}
	for i, c := range m.Columns {
		idx[c.Name] = i
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{
		{"id", &r.colID}, {"received_at", &r.colReceivedAt}, {"org_id", &r.colOrgID}, {"integration_id", &r.colIntegrationID},
		{"delivery_id", &r.colDeliveryID}, {"content_type", &r.colContentType}, {"headers", &r.colHeaders}, {"body", &r.colBody},
	} {
		i, ok := idx[f.name]
		if !ok {
			return nil, fmt.Errorf("staging.webhooks has no column %s in the replication stream", f.name)
		}
		*f.dst = i
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"original_received_at", &r.colOriginalReceivedAt}, {"source", &r.colSource}, {"backfill_job_id", &r.colBackfillJobID}} {
		*f.dst = -1
		if i, ok := idx[f.name]; ok {
			*f.dst = i
		}
	}
	return r, nil
}

// decodeInsert decodes the tuple of an Insert message ('I', relation id, 'N', tuple) into a change, copying
// what it keeps: src belongs to the connection's read buffer. pglogrepl's decoder would copy every column
// byte by byte first; this reads the columns in place.
func decodeInsert(src []byte, rel *relation) (*change, error) {
	if len(src) < 8 || src[0] != 'I' || src[5] != 'N' {
		return nil, errors.New("malformed insert message")
	}
	p := src[6:]
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if n != rel.ncols {
		return nil, fmt.Errorf("insert has %d columns, relation %d", n, rel.ncols)
	}
	vals := make([][]byte, n)
	nulls := make([]bool, n)
	for i := 0; i < n; i++ {
		if len(p) < 1 {
			return nil, errors.New("truncated tuple")
		}
		kind := p[0]
		p = p[1:]
		switch kind {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
			nulls[i] = true
		case pglogrepl.TupleDataTypeText:
			if len(p) < 4 {
				return nil, errors.New("truncated tuple")
			}
			l := int(binary.BigEndian.Uint32(p))
			p = p[4:]
			if len(p) < l {
				return nil, errors.New("truncated tuple")
			}
			vals[i] = p[:l]
			p = p[l:]
		default:
			return nil, fmt.Errorf("unexpected tuple data kind %q", kind)
		}
	}
	c := &change{}
	var err error
	if c.webhookID, err = textInt(vals[rel.colID], nulls[rel.colID]); err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	if c.orgID, err = textInt(vals[rel.colOrgID], nulls[rel.colOrgID]); err != nil {
		return nil, fmt.Errorf("org_id: %w", err)
	}
	if c.integrationID, err = textInt(vals[rel.colIntegrationID], nulls[rel.colIntegrationID]); err != nil {
		return nil, fmt.Errorf("integration_id: %w", err)
	}
	if c.receivedAt, err = textTimestamptz(vals[rel.colReceivedAt]); err != nil {
		return nil, fmt.Errorf("received_at: %w", err)
	}
	if i := rel.colOriginalReceivedAt; i >= 0 && !nulls[i] {
		// a replayed, retried or resynced copy: replicators read when the delivery first arrived
		if c.originalReceivedAt, err = textTimestamptz(vals[i]); err != nil {
			return nil, fmt.Errorf("original_received_at: %w", err)
		}
	}
	c.source = staging.SourceWebhook
	if i := rel.colSource; i >= 0 && !nulls[i] {
		c.source = staging.Source(vals[i])
	}
	if i := rel.colBackfillJobID; i >= 0 && !nulls[i] {
		if c.backfillJobID, err = textInt(vals[i], false); err != nil {
			return nil, fmt.Errorf("backfill_job_id: %w", err)
		}
	}
	c.deliveryID = string(vals[rel.colDeliveryID]) // NULL decodes as nil, so ""
	c.contentType = string(vals[rel.colContentType])
	c.headers = append([]byte(nil), vals[rel.colHeaders]...)
	if c.body, err = textBytea(vals[rel.colBody]); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	c.size = int64(len(c.headers)+len(c.body)+len(c.contentType)+len(c.deliveryID)) + changeOverhead
	return c, nil
}

func textInt(b []byte, null bool) (int64, error) {
	if null {
		return 0, errors.New("is null")
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// textTimestamptz parses timestamptz output with DateStyle ISO and TimeZone UTC, which the replication
// connection sets.
func textTimestamptz(b []byte) (time.Time, error) {
	t, err := time.Parse("2006-01-02 15:04:05.999999Z07", string(b))
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// textBytea decodes bytea_output = hex (set on the replication connection): \x then two digits a byte.
func textBytea(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != '\\' || b[1] != 'x' {
		return nil, errors.New("not hex bytea output")
	}
	out := make([]byte, hex.DecodedLen(len(b)-2))
	if _, err := hex.Decode(out, b[2:]); err != nil {
		return nil, err
	}
	return out, nil
}

// deliveredAt is when the delivery first arrived: a copy's received_at is when it was stored again.
func (c *change) deliveredAt() time.Time {
	if !c.originalReceivedAt.IsZero() {
		return c.originalReceivedAt
	}
	return c.receivedAt
}
