package savedquery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Format is how a result is written.
type Format string

const (
	JSON Format = "json"
	CSV  Format = "csv"
)

// ParseFormat reads a format parameter; empty is JSON.
func ParseFormat(s string) (Format, bool) {
	switch Format(s) {
	case "", JSON:
		return JSON, true
	case CSV:
		return CSV, true
	}
	return "", false
}

// Limits cap a result: rows, and bytes of the encoded rows.
type Limits struct {
	MaxRows  int
	MaxBytes int
}

// Result is a run's answer, encoded for its format and held whole, so it can be cached and served again.
type Result struct {
	Format  Format
	Columns []string
	// rows are the encoded rows: JSON arrays, or CSV lines with their line ending.
	rows [][]byte
	size int
	// TruncatedBy names the cap that cut the result ("max_rows" or "max_bytes"), empty when it is whole.
	TruncatedBy string
	Limits      Limits
	GeneratedAt time.Time
}

// RowCount is the number of rows the result holds.
func (r *Result) RowCount() int { return len(r.rows) }

// Size is about the memory the result holds.
func (r *Result) Size() int { return r.size + 64*len(r.rows) + 256 }

// Collect reads rows into a result of format, up to the limits. Past a cap it calls stop (which should cancel
// the query, so the rest of the result is not read) and returns what it has, saying which cap cut it. A query
// that fails returns its error, whatever rows came before.
//
// The query must run in the extended protocol without a prepared statement's description
// (QueryExecModeExec): its values arrive as Postgres' own text, which CSV writes as it is (as COPY ... CSV
// would), while JSON gets the decoded values (numbers as numbers).
func Collect(rows pgx.Rows, format Format, lim Limits, stop func()) (*Result, error) {
	defer rows.Close()
	res := &Result{Format: format, Limits: lim, GeneratedAt: time.Now()}
	for _, f := range rows.FieldDescriptions() {
		res.Columns = append(res.Columns, f.Name)
	}
	var line bytes.Buffer
	for rows.Next() {
		if len(res.rows) == lim.MaxRows {
			res.TruncatedBy = "max_rows"
			break
		}
		var b []byte
		if format == CSV {
			line.Reset()
			for i, v := range rows.RawValues() {
				if i > 0 {
					line.WriteByte(',')
				}
				writeCSVField(&line, v, v == nil)
			}
			line.WriteString("\r\n")
			b = bytes.Clone(line.Bytes())
		} else {
			vals, err := rows.Values()
			if err != nil {
				return nil, err
			}
			b = JSONRow(vals)
		}
		if res.size+len(b)+1 > lim.MaxBytes {
			res.TruncatedBy = "max_bytes"
			break
		}
		res.size += len(b) + 1
		res.rows = append(res.rows, b)
	}
	if res.TruncatedBy != "" {
		stop()
		rows.Close()
		return res, nil
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// JSONRow encodes a row's values as a JSON array; values JSON cannot hold (NaN, infinities) become text.
func JSONRow(vals []any) []byte {
	b, err := json.Marshal(vals)
	if err == nil {
		return b
	}
	out := make([]any, len(vals))
	for i, v := range vals {
		if _, err := json.Marshal(v); err != nil {
			out[i] = fmt.Sprint(v)
			continue
		}
		out[i] = v
	}
	b, _ = json.Marshal(out)
	return b
}

// writeCSVField writes one field as RFC 4180 and COPY ... CSV do: NULL as nothing, an empty string as "", and
// quotes around a value holding a delimiter, a quote, a line break or edge spaces (quotes inside doubled).
func writeCSVField(w *bytes.Buffer, v []byte, null bool) {
	if null {
		return
	}
	s := string(v)
	if s != "" && !strings.ContainsAny(s, ",\"\r\n") && s[0] != ' ' && s[len(s)-1] != ' ' && s[0] != '\t' && s[len(s)-1] != '\t' {
		w.WriteString(s)
		return
	}
	w.WriteByte('"')
	w.WriteString(strings.ReplaceAll(s, `"`, `""`))
	w.WriteByte('"')
}

// ContentType is the media type of the encoded result.
func (r *Result) ContentType() string {
	if r.Format == CSV {
		return "text/csv; charset=utf-8"
	}
	return "application/json"
}

// WriteTo writes the result: for JSON the shape of `db sql`'s answer (columns, rows, row_count, truncated,
// truncated_by, max_rows, max_bytes) with generated_at; for CSV a header line of the column names, then the
// rows (the caller says in headers whether caps cut it).
func (r *Result) WriteTo(w io.Writer) (int64, error) {
	var buf bytes.Buffer
	if r.Format == CSV {
		for i, c := range r.Columns {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeCSVField(&buf, []byte(c), false)
		}
		buf.WriteString("\r\n")
		n, err := buf.WriteTo(w)
		if err != nil {
			return n, err
		}
		for _, row := range r.rows {
			m, err := w.Write(row)
			n += int64(m)
			if err != nil {
				return n, err
			}
		}
		return n, nil
	}
	cols, _ := json.Marshal(r.Columns)
	if r.Columns == nil {
		cols = []byte("[]")
	}
	buf.WriteString(`{"columns":`)
	buf.Write(cols)
	buf.WriteString(`,"rows":[`)
	for i, row := range r.rows {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(row)
	}
	buf.WriteString(`],"row_count":` + strconv.Itoa(len(r.rows)) + `,"truncated":` + strconv.FormatBool(r.TruncatedBy != ""))
	if r.TruncatedBy != "" {
		buf.WriteString(`,"truncated_by":"` + r.TruncatedBy + `"`)
	}
	buf.WriteString(`,"max_rows":` + strconv.Itoa(r.Limits.MaxRows) + `,"max_bytes":` + strconv.Itoa(r.Limits.MaxBytes))
	at, _ := json.Marshal(r.GeneratedAt.UTC())
	buf.WriteString(`,"generated_at":`)
	buf.Write(at)
	buf.WriteString("}\n")
	return buf.WriteTo(w)
}
