package fanout

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
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
	// size is the change's memory as received, which sizes batches; held is what it counts against the
	// in-flight cap now: less once its payload is shed.
	size int64
	held int64
	// shed: headers and body were dropped to make room (see scheduler.shed); they are read back from staging
	// before the change is applied.
	shed bool
}

// payloadBytes is what the change holds in headers and body (0 once shed).
func (c *change) payloadBytes() int64 { return int64(len(c.headers) + len(c.body)) }

// dropPayload frees the change's headers and body until it is applied, and returns the bytes freed.
func (c *change) dropPayload() int64 {
	if c.shed {
		return 0
	}
	freed := c.payloadBytes()
	c.headers, c.body, c.shed = nil, nil, true
	c.held -= freed
	return freed
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
	// The columns are read in place, into arrays on the stack for a table of staging's size.
	var (
		vals         [tupleColumns][]byte
		nulls, isBin [tupleColumns]bool
	)
	t := tuple{vals: vals[:0], nulls: nulls[:0], binary: isBin[:0]}
	if n <= tupleColumns {
		t.vals, t.nulls, t.binary = vals[:n], nulls[:n], isBin[:n]
	} else {
		t = tuple{vals: make([][]byte, n), nulls: make([]bool, n), binary: make([]bool, n)}
	}
	for i := 0; i < n; i++ {
		if len(p) < 1 {
			return nil, errors.New("truncated tuple")
		}
		kind := p[0]
		p = p[1:]
		switch kind {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
			t.nulls[i] = true
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if len(p) < 4 {
				return nil, errors.New("truncated tuple")
			}
			l := int(binary.BigEndian.Uint32(p))
			p = p[4:]
			if len(p) < l {
				return nil, errors.New("truncated tuple")
			}
			t.vals[i] = p[:l]
			t.binary[i] = kind == pglogrepl.TupleDataTypeBinary
			p = p[l:]
		default:
			return nil, fmt.Errorf("unexpected tuple data kind %q", kind)
		}
	}
	c := &change{}
	var err error
	if c.webhookID, err = t.int8(rel.colID); err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	if c.orgID, err = t.int8(rel.colOrgID); err != nil {
		return nil, fmt.Errorf("org_id: %w", err)
	}
	if c.integrationID, err = t.int8(rel.colIntegrationID); err != nil {
		return nil, fmt.Errorf("integration_id: %w", err)
	}
	if c.receivedAt, err = t.timestamptz(rel.colReceivedAt); err != nil {
		return nil, fmt.Errorf("received_at: %w", err)
	}
	if i := rel.colOriginalReceivedAt; i >= 0 && !t.nulls[i] {
		// a replayed, retried or resynced copy: replicators read when the delivery first arrived
		if c.originalReceivedAt, err = t.timestamptz(i); err != nil {
			return nil, fmt.Errorf("original_received_at: %w", err)
		}
	}
	c.source = staging.SourceWebhook
	if i := rel.colSource; i >= 0 && !t.nulls[i] {
		c.source = sourceOf(t.vals[i])
	}
	if i := rel.colBackfillJobID; i >= 0 && !t.nulls[i] {
		if c.backfillJobID, err = t.int8(i); err != nil {
			return nil, fmt.Errorf("backfill_job_id: %w", err)
		}
	}
	c.deliveryID = string(t.vals[rel.colDeliveryID]) // NULL decodes as nil, so ""
	if ct := t.vals[rel.colContentType]; string(ct) == jsonContentType {
		c.contentType = jsonContentType // most deliveries: no allocation
	} else {
		c.contentType = string(ct)
	}
	if c.headers, c.body, err = t.headersAndBody(rel.colHeaders, rel.colBody); err != nil {
		return nil, err
	}
	c.size = int64(len(c.headers)+len(c.body)+len(c.contentType)+len(c.deliveryID)) + changeOverhead
	c.held = c.size
	return c, nil
}

const jsonContentType = "application/json"

// tupleColumns is how many columns decodeInsert reads without allocating; staging.webhooks has 18.
const tupleColumns = 32

// sourceOf returns the source named by b without allocating for the known ones.
func sourceOf(b []byte) staging.Source {
	switch string(b) {
	case string(staging.SourceWebhook):
		return staging.SourceWebhook
	case string(staging.SourceBackfill):
		return staging.SourceBackfill
	case string(staging.SourceReplay):
		return staging.SourceReplay
	case string(staging.SourceResync):
		return staging.SourceResync
	}
	return staging.Source(b)
}

// headersAndBody copies the headers (jsonb) and the body (bytea) out of the read buffer; in binary form both
// share one allocation, the headers capped so that appending to them cannot run into the body.
func (t *tuple) headersAndBody(hi, bi int) (headers, body []byte, err error) {
	if !t.binary[hi] || !t.binary[bi] || t.nulls[hi] || t.nulls[bi] {
		if headers, err = t.jsonb(hi); err != nil {
			return nil, nil, fmt.Errorf("headers: %w", err)
		}
		if body, err = t.bytea(bi); err != nil {
			return nil, nil, fmt.Errorf("body: %w", err)
		}
		return headers, body, nil
	}
	h, b := t.vals[hi], t.vals[bi]
	if len(h) < 1 || h[0] != 1 {
		return nil, nil, errors.New("headers: unknown binary jsonb version")
	}
	h = h[1:]
	buf := make([]byte, len(h)+len(b))
	copy(buf, h)
	copy(buf[len(h):], b)
	return buf[:len(h):len(h)], buf[len(h):], nil
}

// tuple is the columns of one row as pgoutput sends them: text output, or binary send form when the stream
// was started with binary 'true' (a type without a send function would still come as text).
type tuple struct {
	vals   [][]byte
	nulls  []bool
	binary []bool
}

// pgEpoch is where Postgres' binary timestamps count microseconds from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (t *tuple) int8(i int) (int64, error) {
	b := t.vals[i]
	switch {
	case t.nulls[i]:
		return 0, errors.New("is null")
	case !t.binary[i]:
		return strconv.ParseInt(string(b), 10, 64)
	case len(b) != 8:
		return 0, fmt.Errorf("binary bigint of %d bytes", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// timestamptz reads binary microseconds since 2000-01-01 UTC, or text output with DateStyle ISO and TimeZone
// UTC, which the replication connection sets.
func (t *tuple) timestamptz(i int) (time.Time, error) {
	b := t.vals[i]
	switch {
	case t.nulls[i]:
		return time.Time{}, errors.New("is null")
	case !t.binary[i]:
		ts, err := time.Parse("2006-01-02 15:04:05.999999Z07", string(b))
		return ts.UTC(), err
	case len(b) != 8:
		return time.Time{}, fmt.Errorf("binary timestamptz of %d bytes", len(b))
	}
	us := int64(binary.BigEndian.Uint64(b))
	if us == math.MaxInt64 || us == math.MinInt64 {
		return time.Time{}, errors.New("infinite timestamp")
	}
	return pgEpoch.Add(time.Duration(us) * time.Microsecond), nil
}

// bytea copies the value out of the read buffer: binary is the bytes themselves, text is bytea_output = hex
// (set on the replication connection), \x then two digits a byte.
func (t *tuple) bytea(i int) ([]byte, error) {
	b := t.vals[i]
	if t.nulls[i] {
		return nil, errors.New("is null")
	}
	if t.binary[i] {
		return append([]byte{}, b...), nil
	}
	if len(b) < 2 || b[0] != '\\' || b[1] != 'x' {
		return nil, errors.New("not hex bytea output")
	}
	out := make([]byte, hex.DecodedLen(len(b)-2))
	if _, err := hex.Decode(out, b[2:]); err != nil {
		return nil, err
	}
	return out, nil
}

// jsonb copies the JSON text out of the read buffer: binary jsonb is a version byte (1) and the text.
func (t *tuple) jsonb(i int) ([]byte, error) {
	b := t.vals[i]
	if t.nulls[i] {
		return nil, errors.New("is null")
	}
	if t.binary[i] {
		if len(b) < 1 || b[0] != 1 {
			return nil, errors.New("unknown binary jsonb version")
		}
		b = b[1:]
	}
	return append([]byte{}, b...), nil
}

// deliveredAt is when the delivery first arrived: a copy's received_at is when it was stored again.
func (c *change) deliveredAt() time.Time {
	if !c.originalReceivedAt.IsZero() {
		return c.originalReceivedAt
	}
	return c.receivedAt
}
