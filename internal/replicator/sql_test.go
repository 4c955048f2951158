package replicator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ensure(t testing.TB, db *pgxpool.Pool, s *Service, table string) {
	t.Helper()
	for _, stmt := range s.EnsureTableSQL("public", table) {
		if _, err := db.Exec(context.Background(), stmt); err != nil {
			t.Fatalf("%s: %v\n%s", s.Name, err, stmt)
		}
	}
}

func upsert(t testing.TB, db *pgxpool.Pool, s *Service, table string, rows []Row) int64 {
	t.Helper()
	sql, args := s.Upsert("public", table, rows)
	conn, err := db.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	RegisterEncodedArrays(conn.Conn().TypeMap())
	tag, err := conn.Exec(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s upsert: %v\n%s", s.Name, err, sql)
	}
	return tag.RowsAffected()
}

// stored is a row read back from Postgres, its values normalised as norm does Go values.
type stored struct {
	key       string
	values    []any
	data      string
	updatedAt time.Time
}

func readTable(t testing.TB, db *pgxpool.Pool, s *Service, table string) map[string]stored {
	t.Helper()
	cols := []string{ident(s.RemoteKey.Name)}
	for _, c := range s.Columns {
		if c.Type == TypeJSONB {
			cols = append(cols, ident(c.Name)+"::text") // pgx would decode numbers to float64
		} else {
			cols = append(cols, ident(c.Name))
		}
	}
	cols = append(cols, "data::text", "row_updated_at")
	rows, err := db.Query(context.Background(), fmt.Sprintf("SELECT %s FROM %s", strings.Join(cols, ", "), qualified("public", table)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]stored{}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		r := stored{key: vals[0].(string), data: canonicalJSON(t, []byte(vals[len(vals)-2].(string))), updatedAt: vals[len(vals)-1].(time.Time)}
		for i, c := range s.Columns {
			r.values = append(r.values, norm(t, c.Type, vals[i+1]))
		}
		out[r.key] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// norm maps a Go column value, or the value pgx read back, to one comparable form.
func norm(t testing.TB, typ string, v any) any {
	t.Helper()
	if v == nil {
		return nil
	}
	switch typ {
	case TypeJSONB:
		switch v := v.(type) {
		case string:
			return canonicalJSON(t, []byte(v))
		case json.RawMessage:
			return canonicalJSON(t, v)
		}
	case TypeNumeric:
		n := v.(pgtype.Numeric)
		r := new(big.Rat).SetInt(n.Int)
		exp := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(max(n.Exp, -n.Exp))), nil))
		if n.Exp >= 0 {
			r.Mul(r, exp)
		} else {
			r.Quo(r, exp)
		}
		return "numeric " + r.RatString()
	case TypeTimestamptz:
		return v.(time.Time).UTC().Format(time.RFC3339Nano)
	case TypeTextArray:
		var list []string
		switch v := v.(type) {
		case []string:
			list = v
		case []any:
			for _, e := range v {
				list = append(list, e.(string))
			}
		}
		return fmt.Sprintf("%q", append([]string{}, list...))
	case TypeBigint, TypeInteger:
		return fmt.Sprint(v)
	}
	return v
}

func canonicalJSON(t testing.TB, b []byte) string {
	t.Helper()
	v, err := parseJSON(b)
	if err != nil {
		t.Fatalf("bad JSON %s: %v", b, err)
	}
	out, err := marshalJSON(canonicalNumbers(v))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// canonicalNumbers renders numbers as jsonb does, so 1e3 and 1000 compare equal.
func canonicalNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		return json.Number(numberText(v))
	case []any:
		for i := range v {
			v[i] = canonicalNumbers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = canonicalNumbers(v[k])
		}
	}
	return v
}

// checkStored compares what Postgres holds with the rows Extract made; want(i) says whether column i should
// hold the Go value (else NULL).
func checkStored(t testing.TB, s *Service, got map[string]stored, rows []Row, want func(i int) bool) {
	t.Helper()
	if len(got) != len(rows) {
		t.Errorf("%s: %d rows stored, want %d", s.Name, len(got), len(rows))
	}
	for _, r := range rows {
		g, ok := got[r.Key]
		if !ok {
			t.Errorf("%s: row %s not stored", s.Name, r.Key)
			continue
		}
		if g.data != canonicalJSON(t, r.Data) {
			t.Errorf("%s %s: data\n got %s\nwant %s", s.Name, r.Key, g.data, r.Data)
		}
		for i, c := range s.Columns {
			var w any
			if want(i) {
				w = norm(t, c.Type, r.Values[i])
			}
			if !reflect.DeepEqual(g.values[i], w) {
				t.Errorf("%s %s: column %s = %#v, want %#v", s.Name, r.Key, c.Name, g.values[i], w)
			}
		}
	}
}

func TestEnsureTableAndUpsertEveryService(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	for _, s := range All() {
		s, rows := fixtureRows(t, s.Name)
		ensure(t, db, s, s.Name)
		ensure(t, db, s, s.Name) // idempotent
		if n := upsert(t, db, s, s.Name, rows); n != int64(len(rows)) {
			t.Errorf("%s: upsert affected %d rows, want %d", s.Name, n, len(rows))
		}
		checkStored(t, s, readTable(t, db, s, s.Name), rows, func(int) bool { return true })
		if s.Policy != Immutable {
			upsert(t, db, s, s.Name, rows) // a replay: every policy leaves the rows be
		}
	}
}

// TestColumnsAddedLater creates every table with its remote key only, then lets EnsureTableSQL add all the
// columns: each must be filled from data with exactly the value Extract gives, so the SQL fill expressions and
// the Go conversions agree.
func TestColumnsAddedLater(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	for _, s := range All() {
		s, rows := fixtureRows(t, s.Name)
		bare := *s
		bare.Columns, bare.Policy = nil, DataChanged
		bareRows := make([]Row, len(rows))
		for i, r := range rows {
			bareRows[i] = Row{Key: r.Key, Data: r.Data}
		}
		ensure(t, db, &bare, s.Name)
		upsert(t, db, &bare, s.Name, bareRows)
		ensure(t, db, s, s.Name)
		ensure(t, db, s, s.Name)
		checkStored(t, s, readTable(t, db, s, s.Name), rows, func(i int) bool {
			c := s.Columns[i]
			return c.From == FromResource && c.Path != ""
		})
	}
}

func TestOneColumnAddedLater(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	s, rows := fixtureRows(t, "stripe_charge_v1")
	drop := slices.IndexFunc(s.Columns, func(c Column) bool { return c.Name == "customer" })
	old := *s
	old.Columns = slices.Delete(slices.Clone(s.Columns), drop, drop+1)
	oldRows := make([]Row, len(rows))
	for i, r := range rows {
		oldRows[i] = Row{Key: r.Key, Values: slices.Delete(slices.Clone(r.Values), drop, drop+1), Data: r.Data}
	}
	ensure(t, db, &old, "charges")
	upsert(t, db, &old, "charges", oldRows)
	before := readTable(t, db, &old, "charges")

	ensure(t, db, s, "charges")
	after := readTable(t, db, s, "charges")
	checkStored(t, s, after, rows, func(int) bool { return true })
	if got := after[rows[0].Key].values[drop]; got != "cus_PjqR8cZb2mK4Lx" {
		t.Errorf("customer filled with %v", got)
	}
	if !after[rows[0].Key].updatedAt.Equal(before[rows[0].Key].updatedAt) {
		t.Error("adding a column bumped row_updated_at")
	}
	var indexed bool
	err := db.QueryRow(context.Background(), "SELECT EXISTS (SELECT FROM pg_indexes WHERE tablename = 'charges' AND indexname = 'charges_customer_idx')").Scan(&indexed)
	if err != nil || !indexed {
		t.Errorf("index on the added column: %v, %v", indexed, err)
	}
}

// TestConversionParity runs awkward values through Extract and through the SQL fill, including values that pass
// the patterns but not the casts (month 13), which take the row-by-row path and must end NULL on both sides.
func TestConversionParity(t *testing.T) {
	t.Parallel()
	s := &Service{
		Name:      "test_parity_v1",
		RemoteKey: key("id", "id"),
		Columns: []Column{
			text("as_text").at("v"), bigint("as_bigint").at("v"), integer("as_integer").at("v"),
			numeric("as_numeric").at("v"), boolean("as_boolean").at("v"), jsonb("as_jsonb").at("v"),
			textArray("as_array").at("v"), isoTime("as_iso").at("v"), unixTime("as_unix").at("v"),
			{Name: "as_millis", Type: TypeTimestamptz, Path: "v", Convert: ConvertUnixMillis},
			{Name: "as_rfc1123", Type: TypeTimestamptz, Path: "v", Convert: ConvertRFC1123},
			{Name: "as_auto", Type: TypeTimestamptz, Path: "v", Convert: ConvertAutoTime},
			text("fallback").at("missing", "also.missing", "v"),
			text("nested").at("n.0.x"),
		},
		Policy: DataChanged,
	}
	if err := s.validate(); err != nil {
		t.Fatal(err)
	}
	values := []string{
		`"abc"`, `""`, `12`, `"12"`, `-9223372036854775808`, `9223372036854775808`, `99999999999999999999`,
		`2147483648`, `-2147483648`, `-0`, `-0.0`, `0.000`, `1.5`, `"1.50"`, `1e3`, `1.50e2`, `-0.25`, `true`, `"false"`, `null`,
		`{"a":1}`, `[1,"b",null,{"c":2},false]`, `[]`, `"2024-03-15T07:59:40-04:00"`, `"2024-03-15 07:59:40+0530"`,
		`"2024-03-15T07:59:40+05"`, `"2019-11-05T16:33:54.9070259Z"`, `"2024-03-15T07:59:40.5"`, `"2024-03-15"`,
		`"2024-13-45T07:59:40Z"`, `"2024-02-30"`, `1710504000`, `"1710504000"`, `1710504000123`, `-1`,
		`99999999999`, `99999999999999`, `"Mon, 16 Aug 2010 03:45:01 +0000"`, `"Fri, 1 Mar 2024 07:45:01 -0500"`,
		`"Fri, 31 Feb 2024 07:45:01 -0500"`, `"yesterday"`, `"1e5"`, `"NaN"`, `"Infinity"`,
	}
	var rows []Row
	for i, v := range values {
		body := fmt.Sprintf(`{"id":"%d","v":%s,"n":[{"x":%s}]}`, i, v, v)
		got, err := s.Extract(jsonHook(body))
		if err != nil {
			t.Fatalf("Extract(%s): %v", body, err)
		}
		rows = append(rows, got...)
	}
	db := pgtest.NewEmptyDB(t)
	bare := *s
	bare.Columns = nil
	var bareRows []Row
	for _, r := range rows {
		bareRows = append(bareRows, Row{Key: r.Key, Data: r.Data})
	}
	ensure(t, db, &bare, "parity")
	upsert(t, db, &bare, "parity", bareRows)
	ensure(t, db, s, "parity")
	checkStored(t, s, readTable(t, db, s, "parity"), rows, func(int) bool { return true })

	// The same rows written directly must read back as Extract made them (pgx encoding of every type).
	ensure(t, db, s, "direct")
	upsert(t, db, s, "direct", rows)
	checkStored(t, s, readTable(t, db, s, "direct"), rows, func(int) bool { return true })
}

// stripeCustomerAt rewrites the fixture's Stripe event time and the customer name, so copies differ.
func stripeCustomerAt(t testing.TB, created int64, name string) Row {
	t.Helper()
	s, w := fixtureService(t, "stripe_customer_v1")
	body := bytes.Replace(w.Body, []byte(`"created": 1710500950`), []byte(`"created": `+strconv.FormatInt(created, 10)), 1)
	body = bytes.Replace(body, []byte(`"name": "Jenny Rosen"`), []byte(`"name": "`+name+`"`), 1)
	w.Body = body
	rows, err := s.Extract(w)
	if err != nil || len(rows) != 1 {
		t.Fatalf("Extract = %v, %v", rows, err)
	}
	return rows[0]
}

func storedName(t testing.TB, db *pgxpool.Pool, table string) (name string, updatedAt time.Time) {
	t.Helper()
	err := db.QueryRow(context.Background(), "SELECT name, row_updated_at FROM "+table).Scan(&name, &updatedAt)
	if err != nil {
		t.Fatal(err)
	}
	return name, updatedAt
}

func TestNewerWins(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	s := mustLookup(t, "stripe_customer_v1")
	ensure(t, db, s, "customers")

	upsert(t, db, s, "customers", []Row{stripeCustomerAt(t, 2000, "v2000")})
	steps := []struct {
		created int64
		name    string
		want    string
	}{
		{1000, "older", "v2000"},
		{2000, "same time", "v2000"},
		{3000, "v3000", "v3000"},
		{2999, "late retry", "v3000"},
	}
	for _, step := range steps {
		_, before := storedName(t, db, "customers")
		n := upsert(t, db, s, "customers", []Row{stripeCustomerAt(t, step.created, step.name)})
		name, after := storedName(t, db, "customers")
		if name != step.want {
			t.Errorf("after event at %d: name %q, want %q", step.created, name, step.want)
		}
		if changed := step.want == step.name; changed != (n == 1) || changed == after.Equal(before) {
			t.Errorf("after event at %d: %d rows affected, row_updated_at %v -> %v", step.created, n, before, after)
		}
	}

	// A stored row without a timestamp is older than anything, and a batch keeps the newest copy.
	if _, err := db.Exec(context.Background(), "UPDATE customers SET updated = NULL"); err != nil {
		t.Fatal(err)
	}
	upsert(t, db, s, "customers", []Row{stripeCustomerAt(t, 50, "newest in batch"), stripeCustomerAt(t, 10, "older in batch")})
	if name, _ := storedName(t, db, "customers"); name != "newest in batch" {
		t.Errorf("NULL stored timestamp: name %q", name)
	}
	// An incoming NULL timestamp never replaces a stored one.
	r := stripeCustomerAt(t, 60, "no timestamp")
	r.Values[slices.IndexFunc(s.Columns, func(c Column) bool { return c.Name == "updated" })] = nil
	upsert(t, db, s, "customers", []Row{r})
	if name, _ := storedName(t, db, "customers"); name != "newest in batch" {
		t.Errorf("incoming NULL timestamp replaced the row: %q", name)
	}
}

func TestDataChanged(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	s, rows := fixtureRows(t, "github_release_v1")
	ensure(t, db, s, "releases")
	upsert(t, db, s, "releases", rows)
	first := readTable(t, db, s, "releases")[rows[0].Key]

	// Same JSON, other key order and spacing: jsonb equality, no update.
	var obj map[string]any
	if err := json.Unmarshal(rows[0].Data, &obj); err != nil {
		t.Fatal(err)
	}
	same := rows[0]
	same.Data, _ = json.MarshalIndent(obj, "", "    ")
	if n := upsert(t, db, s, "releases", []Row{same}); n != 0 {
		t.Errorf("identical data: %d rows affected", n)
	}
	if got := readTable(t, db, s, "releases")[rows[0].Key]; !got.updatedAt.Equal(first.updatedAt) {
		t.Error("identical data bumped row_updated_at")
	}

	changed := rows[0]
	obj["name"] = "Bookshelf 2.4.0 (hotfix)"
	changed.Data, _ = json.Marshal(obj)
	if n := upsert(t, db, s, "releases", []Row{changed}); n != 1 {
		t.Errorf("changed data: %d rows affected", n)
	}
	got := readTable(t, db, s, "releases")[rows[0].Key]
	if !strings.Contains(got.data, "hotfix") || !got.updatedAt.After(first.updatedAt) {
		t.Errorf("changed data not applied: %s, %v -> %v", got.data, first.updatedAt, got.updatedAt)
	}
}

func TestImmutable(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	s, rows := fixtureRows(t, "postmark_inbound_message_v1")
	ensure(t, db, s, "inbound")
	upsert(t, db, s, "inbound", rows)
	first := readTable(t, db, s, "inbound")[rows[0].Key]

	changed := rows[0]
	changed.Data = []byte(`{"MessageID":"73e6d360-66eb-11e1-8e72-a8904824019b","Subject":"changed"}`)
	changed.Values = slices.Clone(changed.Values)
	changed.Values[slices.IndexFunc(s.Columns, func(c Column) bool { return c.Name == "subject" })] = "changed"
	if n := upsert(t, db, s, "inbound", []Row{changed, changed}); n != 0 {
		t.Errorf("immutable: %d rows affected", n)
	}
	got := readTable(t, db, s, "inbound")[rows[0].Key]
	if got.data != first.data || !got.updatedAt.Equal(first.updatedAt) {
		t.Error("immutable row was updated")
	}
}

// TestLargeBatch shows one statement takes more rows than the 65535-parameter limit would allow as VALUES.
func TestLargeBatch(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	s, rows := fixtureRows(t, "stripe_charge_v1")
	ensure(t, db, s, "charges")
	const n = 5000 // x 18 columns = 90,000 values
	batch := make([]Row, n)
	for i := range batch {
		batch[i] = rows[0]
		batch[i].Key = fmt.Sprintf("ch_%05d", i)
	}
	if got := upsert(t, db, s, "charges", batch); got != n {
		t.Errorf("affected %d rows, want %d", got, n)
	}
	var count int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM charges WHERE amount = 4999").Scan(&count); err != nil || count != n {
		t.Errorf("count = %d, %v", count, err)
	}
	if got := upsert(t, db, s, "charges", nil); got != 0 {
		t.Errorf("empty batch affected %d rows", got)
	}
}

func TestQuotedIdentifiers(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	if _, err := db.Exec(context.Background(), `CREATE SCHEMA "Org ""A"""`); err != nil {
		t.Fatal(err)
	}
	s, rows := fixtureRows(t, "twilio_sms_v1") // has columns named from and to
	table := `sms "log"; drop`
	for _, stmt := range s.EnsureTableSQL(`Org "A"`, table) {
		if _, err := db.Exec(context.Background(), stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	sql, args := s.Upsert(`Org "A"`, table, rows)
	conn, err := db.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	RegisterEncodedArrays(conn.Conn().TypeMap())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
	var from string
	q := fmt.Sprintf(`SELECT "from" FROM %s`, pgx.Identifier{`Org "A"`, table}.Sanitize())
	if err := db.QueryRow(context.Background(), q).Scan(&from); err != nil || from != "+15035550199" {
		t.Errorf("from = %q, %v", from, err)
	}
}
