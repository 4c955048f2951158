package replicator

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// maxIdentifierLen is Postgres' NAMEDATALEN-1; longer names are silently truncated by the server.
const maxIdentifierLen = 63

func qualified(schema, table string) string {
	if schema == "" {
		return pgx.Identifier{table}.Sanitize()
	}
	return pgx.Identifier{schema, table}.Sanitize()
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// EnsureTableSQL returns the idempotent statements that create the service's table in schema (or the search
// path, when schema is "") and bring an existing one up to date: columns added to the service since are added
// and filled from data, and indexes created. Run them in order; they may share a transaction. Indexes are
// built with plain CREATE INDEX (CONCURRENTLY cannot run in a transaction, and a failed concurrent build leaves
// an invalid index that IF NOT EXISTS would then skip forever).
func (s *Service) EnsureTableSQL(schema, table string) []string {
	tbl := qualified(schema, table)
	defs := []string{"pk bigserial PRIMARY KEY", ident(s.RemoteKey.Name) + " text UNIQUE NOT NULL"}
	for _, c := range s.Columns {
		defs = append(defs, ident(c.Name)+" "+c.Type)
	}
	defs = append(defs, "row_updated_at timestamptz NOT NULL DEFAULT now()", "data jsonb NOT NULL")
	stmts := []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n\t%s\n)", tbl, strings.Join(defs, ",\n\t"))}
	if len(s.Columns) > 0 {
		stmts = append(stmts, s.addColumnsSQL(tbl))
	}
	for _, c := range s.Columns {
		if c.Index {
			stmts = append(stmts, fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%s)", ident(indexName(table, c.Name)), tbl, ident(c.Name)))
		}
	}
	return stmts
}

// IndexNames are the names of the indexes EnsureTableSQL creates on the columns the service marks indexed, so a
// caller can check a table for them without running the DDL.
func (s *Service) IndexNames(table string) []string {
	var out []string
	for _, c := range s.Columns {
		if c.Index {
			out = append(out, indexName(table, c.Name))
		}
	}
	return out
}

// addColumnsSQL adds the columns a table created by an older version of the service lacks. It checks the
// catalog first so the fill UPDATE, a full rewrite, runs only when the column is new. The fill gates every cast
// (see convert.go); a value that still fails to cast (2024-13-45) sends the fill row by row, leaving just that
// row NULL rather than blocking the table's migration forever.
func (s *Service) addColumnsSQL(tbl string) string {
	var b strings.Builder
	b.WriteString("\nDECLARE\n\trow_pk bigint;\n\tfill text;\nBEGIN\n")
	for _, c := range s.Columns {
		col := ident(c.Name)
		fmt.Fprintf(&b, "\tIF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped) THEN\n",
			sqlLiteral(tbl), sqlLiteral(c.Name))
		fmt.Fprintf(&b, "\t\tALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s;\n", tbl, col, c.Type)
		if expr := fillExpr(c, "data"); expr != "" {
			fmt.Fprintf(&b, "\t\tfill := %s;\n", dollarQuote(fmt.Sprintf("UPDATE %s SET %s = %s", tbl, col, expr), "fill"))
			b.WriteString("\t\tBEGIN\n\t\t\tEXECUTE fill;\n\t\tEXCEPTION WHEN data_exception THEN\n")
			fmt.Fprintf(&b, "\t\t\tFOR row_pk IN SELECT pk FROM %s LOOP\n", tbl)
			b.WriteString("\t\t\t\tBEGIN\n\t\t\t\t\tEXECUTE fill || ' WHERE pk = $1' USING row_pk;\n")
			b.WriteString("\t\t\t\tEXCEPTION WHEN data_exception THEN\n\t\t\t\t\tNULL;\n\t\t\t\tEND;\n")
			b.WriteString("\t\t\tEND LOOP;\n\t\tEND;\n")
		}
		b.WriteString("\tEND IF;\n")
	}
	b.WriteString("END\n")
	return "DO " + dollarQuote(b.String(), "webhookdb")
}

// dollarQuote quotes body as a dollar-quoted constant with a tag that does not occur in it.
func dollarQuote(body, tag string) string {
	t := "$" + tag + "$"
	for i := 0; strings.Contains(body, t); i++ {
		t = "$" + tag + strconv.Itoa(i) + "$"
	}
	return t + body + t
}

// indexName is <table>_<column>_idx, shortened with a hash when too long, so that truncation by the server
// cannot make two indexes collide (and IF NOT EXISTS skip the second).
func indexName(table, column string) string {
	name := table + "_" + column + "_idx"
	if len(name) <= maxIdentifierLen {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	suffix := fmt.Sprintf("_%08x", h.Sum32())
	return name[:maxIdentifierLen-len(suffix)] + suffix
}

// Upsert returns one statement applying rows to the table, and its arguments: one array per column, unnested
// server side, so the SQL text is fixed per table and a batch is not bounded by the parameter limit. Rows are
// deduplicated first (see Dedupe), as ON CONFLICT DO UPDATE cannot touch a row twice in one statement.
func (s *Service) Upsert(schema, table string, rows []Row) (sql string, args []any) {
	return s.upsertSQL(qualified(schema, table)), s.upsertArgs(s.Dedupe(rows))
}

func (s *Service) upsertSQL(tbl string) string {
	names := []string{ident(s.RemoteKey.Name)}
	params := []string{"$1::text[]"}
	selects := []string{"v." + names[0]}
	for i, c := range s.Columns {
		col := ident(c.Name)
		names = append(names, col)
		switch c.Type {
		case TypeTextArray:
			// Postgres arrays are rectangular, so a text[] per row travels as a JSON array.
			params = append(params, fmt.Sprintf("$%d::jsonb[]", i+2))
			selects = append(selects, fmt.Sprintf("CASE WHEN v.%s IS NOT NULL THEN ARRAY(SELECT e FROM jsonb_array_elements_text(v.%s) WITH ORDINALITY AS a(e, i) ORDER BY i) END", col, col))
		default:
			params = append(params, fmt.Sprintf("$%d::%s[]", i+2, c.Type))
			selects = append(selects, "v."+col)
		}
	}
	names = append(names, "data")
	params = append(params, fmt.Sprintf("$%d::jsonb[]", len(s.Columns)+2))
	selects = append(selects, "v.data")

	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s AS cur (%s)\n", tbl, strings.Join(names, ", "))
	fmt.Fprintf(&b, "SELECT %s\nFROM unnest(%s) AS v(%s)\n", strings.Join(selects, ", "), strings.Join(params, ", "), strings.Join(names, ", "))
	fmt.Fprintf(&b, "ON CONFLICT (%s) DO ", names[0])
	if s.Policy == Immutable {
		b.WriteString("NOTHING")
		return b.String()
	}
	sets := make([]string, 0, len(names))
	for _, n := range names[1:] {
		sets = append(sets, n+" = EXCLUDED."+n)
	}
	sets = append(sets, "row_updated_at = now()")
	fmt.Fprintf(&b, "UPDATE SET %s\n", strings.Join(sets, ", "))
	switch s.Policy {
	case NewerWins:
		ts := ident(s.TimestampColumn)
		fmt.Fprintf(&b, "WHERE cur.%[1]s < EXCLUDED.%[1]s OR (cur.%[1]s IS NULL AND (EXCLUDED.%[1]s IS NOT NULL OR cur.data IS DISTINCT FROM EXCLUDED.data))", ts)
	default:
		b.WriteString("WHERE cur.data IS DISTINCT FROM EXCLUDED.data")
	}
	return b.String()
}

func (s *Service) upsertArgs(rows []Row) []any {
	keySize, dataSize := 0, 0
	for _, r := range rows {
		if len(r.Values) != len(s.Columns) {
			panic(fmt.Sprintf("replicator: %s row has %d values for %d columns", s.Name, len(r.Values), len(s.Columns)))
		}
		keySize += len(r.Key)
		dataSize += 1 + len(r.Data)
	}
	keys := newArrayWriter(pgtype.TextOID, len(rows), keySize)
	data := newArrayWriter(pgtype.JSONBOID, len(rows), dataSize)
	for _, r := range rows {
		keys.string(r.Key)
		if r.Data == nil {
			data.null()
		} else {
			data.jsonb(r.Data)
		}
	}
	args := []any{keys.done(pgtype.TextOID)}
	for ci, c := range s.Columns {
		args = append(args, encodeColumn(s.Name, c, ci, rows))
	}
	return append(args, data.done(pgtype.JSONBOID))
}

// Dedupe returns rows with one row per remote key, the one the conflict policy would keep: NewerWins the
// greatest timestamp (ties and NULLs go to the later row; a timestamp beats NULL), DataChanged the last,
// Immutable the first. Kept rows stay in input order; rows without duplicates come back untouched.
func (s *Service) Dedupe(rows []Row) []Row {
	keep := make(map[string]int, len(rows))
	for i, r := range rows {
		if j, seen := keep[r.Key]; !seen || s.supersedes(r, rows[j]) {
			keep[r.Key] = i
		}
	}
	if len(keep) == len(rows) {
		return rows
	}
	out := make([]Row, 0, len(keep))
	for i, r := range rows {
		if keep[r.Key] == i {
			out = append(out, r)
		}
	}
	return out
}

// supersedes reports whether a later row replaces an earlier one with the same key within a batch.
func (s *Service) supersedes(later, earlier Row) bool {
	switch s.Policy {
	case Immutable:
		return false
	case NewerWins:
		i := s.timestampIndex()
		if i < 0 {
			return true
		}
		lt, lok := later.Values[i].(time.Time)
		et, eok := earlier.Values[i].(time.Time)
		switch {
		case !eok:
			return true
		case !lok:
			return false
		}
		return !lt.Before(et)
	}
	return true
}
