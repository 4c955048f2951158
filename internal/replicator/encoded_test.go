package replicator

import (
	"context"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// Every column type's EncodedArray stores what pgx's own encoding of each value stores, NULLs included.
func TestEncodedArraysStoreWhatPgxWould(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := encodingConn(t)
	num := func(s string) pgtype.Numeric {
		var n pgtype.Numeric
		if err := n.Scan(s); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cases := []struct {
		typ    string
		sqlTyp string // the parameter's element type
		values []any
	}{
		{TypeText, "text", []any{"a", nil, "", "ünïcødé ✓", strings.Repeat("x", 5000), `quote " and \ backslash`}},
		{TypeBigint, "bigint", []any{int64(0), int64(-1), nil, int64(1) << 62, int64(-1) << 63}},
		{TypeInteger, "integer", []any{int32(7), nil, int32(-2147483648), int32(2147483647)}},
		{TypeBoolean, "boolean", []any{true, false, nil}},
		{TypeTimestamptz, "timestamptz", []any{time.Date(2024, 6, 1, 12, 30, 45, 123456000, time.UTC), nil,
			time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), time.Date(1969, 7, 20, 20, 17, 40, 1000, time.UTC),
			time.Unix(0, 0).UTC()}},
		{TypeNumeric, "numeric", []any{num("0"), num("-12.3400"), nil, num("123456789012345678901234567890.000000001"),
			pgtype.Numeric{Int: big.NewInt(5), Exp: 3, Valid: true}, num("NaN")}},
		{TypeJSONB, "jsonb", []any{json.RawMessage(`{"b":1,"a":[true,null,"x"]}`), nil, json.RawMessage(`"s"`), json.RawMessage(`12.50`)}},
		{TypeTextArray, "jsonb", []any{[]string{"a", "b"}, nil, []string{}, []string{`q"`, "ü"}}},
	}
	for _, tc := range cases {
		rows := make([]Row, len(tc.values))
		for i, v := range tc.values {
			rows[i] = Row{Values: []any{v}}
		}
		arr := encodeColumn("test", Column{Name: "c", Type: tc.typ}, 0, rows)
		var got []*string
		if err := conn.QueryRow(ctx, `SELECT array_agg(x::text ORDER BY i) FROM unnest($1::`+tc.sqlTyp+`[]) WITH ORDINALITY AS u(x, i)`, arr).Scan(&got); err != nil {
			t.Fatalf("%s: %v", tc.typ, err)
		}
		if len(got) != len(tc.values) {
			t.Fatalf("%s: %d elements back for %d", tc.typ, len(got), len(tc.values))
		}
		for i, v := range tc.values {
			if l, ok := v.([]string); ok {
				b, _ := json.Marshal(l)
				v = b
			}
			var want *string
			if err := conn.QueryRow(ctx, `SELECT $1::`+tc.sqlTyp+`::text`, v).Scan(&want); err != nil {
				t.Fatalf("%s %v: %v", tc.typ, v, err)
			}
			switch {
			case (want == nil) != (got[i] == nil):
				t.Errorf("%s element %d: got %v, want %v", tc.typ, i, got[i], want)
			case want != nil && *want != *got[i]:
				t.Errorf("%s element %d: got %q, want %q", tc.typ, i, *got[i], *want)
			}
		}
	}
}

// encodingConn is a connection to a new empty database that sends EncodedArrays.
func encodingConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgtest.NewEmptyDB(t).Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	RegisterEncodedArrays(conn.Conn().TypeMap())
	return conn.Conn()
}

// A value of another Go type than its column's is a bug in Extract: encoding it panics (the fanout parks the
// org's changes) rather than storing something else.
func TestEncodeColumnPanicsOnWrongType(t *testing.T) {
	t.Parallel()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "holds a string") {
			t.Fatalf("recovered %v", r)
		}
	}()
	encodeColumn("test", Column{Name: "n", Type: TypeBigint}, 0, []Row{{Values: []any{"12"}}})
}

// An EncodedArray sent as another array type than its elements' is refused, not reinterpreted.
func TestEncodedArrayOfAnotherType(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := encodingConn(t)
	arr := encodeColumn("test", Column{Name: "n", Type: TypeBigint}, 0, []Row{{Values: []any{int64(1)}}})
	if _, err := conn.Exec(ctx, `SELECT $1::text[]`, arr); err == nil || !strings.Contains(err.Error(), "sent as type") {
		t.Fatalf("bigint elements sent as text[]: %v", err)
	}
}
