package replicator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// Each conversion exists twice: in Go for Extract, and in SQL over the stored data for filling a column added
// to an existing table. Both sides gate on the same patterns (valid for Go's RE2 and Postgres' ARE), so a value
// one side rejects as NULL the other rejects too, rather than the SQL cast failing the whole fill.
const (
	bigintPattern     = `^-?[0-9]{1,19}$`
	integerPattern    = `^-?[0-9]{1,10}$`
	numericPattern    = `^-?[0-9]{1,255}(\.[0-9]{1,255})?([eE][-+]?[0-9]{1,3})?$`
	unixSecPattern    = `^-?[0-9]{1,11}$`
	unixMilliPattern  = `^-?[0-9]{1,14}$`
	autoMilliPattern  = `^-?[0-9]{12,14}$`
	isoZonedPattern   = `^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$`
	isoLocalPattern   = `^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?)?$`
	rfc1123Pattern    = `^[A-Z][a-z]{2}, [0-9]{1,2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$`
	rfc1123GoLayout   = "Mon, 2 Jan 2006 15:04:05 -0700"
	isoLocalGoLayout  = "2006-01-02T15:04:05"
	isoDateOnlyLayout = "2006-01-02"
)

var (
	// The digit-only patterns are matched without a regexp: they run for most numbers of most rows.
	bigintRE     = signedDigits{1, 19} // bigintPattern
	integerRE    = signedDigits{1, 10} // integerPattern
	numericRE    = regexp.MustCompile(numericPattern)
	unixSecRE    = signedDigits{1, 11}  // unixSecPattern
	unixMilliRE  = signedDigits{1, 14}  // unixMilliPattern
	autoMilliRE  = signedDigits{12, 14} // autoMilliPattern
	isoZonedRE   = regexp.MustCompile(isoZonedPattern)
	isoLocalRE   = regexp.MustCompile(isoLocalPattern)
	rfc1123RE    = regexp.MustCompile(rfc1123Pattern)
	isoZoneForms = []string{"2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05Z0700", "2006-01-02T15:04:05Z07"}
)

// signedDigits matches ^-?[0-9]{min,max}$ (TestSignedDigitsMatchPatterns holds it to the SQL side's patterns).
type signedDigits struct{ min, max int }

func (d signedDigits) MatchString(t string) bool {
	t = strings.TrimPrefix(t, "-")
	if len(t) < d.min || len(t) > d.max {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] < '0' || t[i] > '9' {
			return false
		}
	}
	return true
}

// scalarText is the text of a JSON scalar, as Postgres' #>> gives it; objects, arrays and null have none.
func scalarText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return numberText(v), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

// numberText writes a number as jsonb gives it back, jsonb numbers being numeric: exponents written out
// (1.5e2 is 150) and negative zero without its sign.
func numberText(n json.Number) string {
	if !strings.ContainsAny(string(n), "eE") {
		if strings.HasPrefix(string(n), "-") && strings.Trim(string(n), "-0.") == "" {
			return string(n)[1:]
		}
		return string(n)
	}
	var num pgtype.Numeric
	if err := num.ScanScientific(string(n)); err != nil {
		return string(n)
	}
	v, err := num.Value()
	if err != nil {
		return string(n)
	}
	s, _ := v.(string)
	return s
}

// convert turns a JSON value (as decoded with UseNumber) into the Go value of a column; nil means NULL.
func convert(v any, typ string, conv Converter) any {
	if v == nil {
		return nil
	}
	switch typ {
	case TypeJSONB:
		b, err := marshalJSON(v)
		if err != nil {
			return nil
		}
		return json.RawMessage(b)
	case TypeTextArray:
		arr, ok := v.([]any)
		if !ok {
			return nil
		}
		out := make([]string, 0, len(arr))
		for _, e := range arr {
			if t, ok := scalarText(e); ok {
				out = append(out, t)
			}
		}
		return out
	}
	t, ok := scalarText(v)
	if !ok {
		return nil
	}
	return convertText(t, typ, conv)
}

// convertText converts a scalar's text. Header values enter here directly.
func convertText(t, typ string, conv Converter) any {
	switch typ {
	case TypeText:
		return t
	case TypeBigint:
		if !bigintRE.MatchString(t) {
			return nil
		}
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return nil
		}
		return n
	case TypeInteger:
		if !integerRE.MatchString(t) {
			return nil
		}
		n, err := strconv.ParseInt(t, 10, 32)
		if err != nil {
			return nil
		}
		return int32(n)
	case TypeNumeric:
		if !numericRE.MatchString(t) {
			return nil
		}
		var n pgtype.Numeric
		if err := n.ScanScientific(t); err != nil {
			return nil
		}
		return n
	case TypeBoolean:
		switch t {
		case "true":
			return true
		case "false":
			return false
		}
		return nil
	case TypeTimestamptz:
		if ts, ok := parseTime(t, conv); ok {
			return ts
		}
		return nil
	}
	return nil
}

func parseTime(t string, conv Converter) (time.Time, bool) {
	switch conv {
	case ConvertUnixSeconds:
		return parseUnix(t, unixSecRE, time.Second)
	case ConvertUnixMillis:
		return parseUnix(t, unixMilliRE, time.Millisecond)
	case ConvertRFC1123:
		if !rfc1123RE.MatchString(t) {
			return time.Time{}, false
		}
		ts, err := time.Parse(rfc1123GoLayout, t)
		return normTime(ts), err == nil
	case ConvertAutoTime:
		if ts, ok := parseUnix(t, unixSecRE, time.Second); ok {
			return ts, true
		}
		if ts, ok := parseUnix(t, autoMilliRE, time.Millisecond); ok {
			return ts, true
		}
	}
	return parseISO(t)
}

func parseUnix(t string, re signedDigits, unit time.Duration) (time.Time, bool) {
	if !re.MatchString(t) {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	if unit == time.Second {
		return time.Unix(n, 0).UTC(), true
	}
	return time.UnixMilli(n).UTC(), true
}

func parseISO(t string) (time.Time, bool) {
	zoned := isoZonedRE.MatchString(t)
	if !zoned && !isoLocalRE.MatchString(t) {
		return time.Time{}, false
	}
	if len(t) > 10 && t[10] == ' ' {
		t = t[:10] + "T" + t[11:]
	}
	if !zoned {
		layout := isoLocalGoLayout
		if len(t) == len(isoDateOnlyLayout) {
			layout = isoDateOnlyLayout
		}
		ts, err := time.Parse(layout, t) // no offset: UTC, as the SQL side says AT TIME ZONE 'UTC'
		return normTime(ts), err == nil
	}
	for _, layout := range isoZoneForms {
		if ts, err := time.Parse(layout, t); err == nil {
			return normTime(ts), true
		}
	}
	return time.Time{}, false
}

// normTime makes a time what Postgres stores: UTC, microseconds. pgx truncates, Postgres' parser rounds.
func normTime(t time.Time) time.Time { return t.Round(time.Microsecond).UTC() }

// marshalJSON encodes without HTML escaping, so data stays as readable as the provider sent it.
func marshalJSON(v any) ([]byte, error) {
	return appendJSON(make([]byte, 0, 1024), v)
}

// appendJSON encodes a decoded document (maps, slices, strings, json.Numbers, booleans, nil) as encoding/json
// does with HTML escaping off and keys sorted, without reflection: this runs once per extracted row. Anything
// else goes through encoding/json.
func appendJSON(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case json.Number:
		if !json.Valid([]byte(v)) {
			return nil, fmt.Errorf("invalid number %q", string(v))
		}
		return append(b, v...), nil
	case string:
		return appendJSONString(b, v), nil
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendJSONString(b, k), ':')
			var err error
			if b, err = appendJSON(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...), nil
}

// appendJSONString quotes s; a string needing escapes (quotes, backslashes, control characters, invalid
// UTF-8, U+2028/U+2029) is left to encoding/json, so the output is byte for byte the same.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			if c >= 0x80 && utf8.ValidString(s) && !strings.ContainsRune(s, '\u2028') && !strings.ContainsRune(s, '\u2029') && !hasEscapes(s) {
				break
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// hasEscapes reports whether s has an ASCII byte JSON must escape.
func hasEscapes(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			return true
		}
	}
	return false
}

// sqlLiteral quotes s as a string constant (standard_conforming_strings is on since Postgres 9.1).
func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// sqlPath is a text[] constant for the #> and #>> operators.
func sqlPath(path string) string {
	segs := strings.Split(path, ".")
	for i, s := range segs {
		segs[i] = sqlLiteral(s)
	}
	return "ARRAY[" + strings.Join(segs, ", ") + "]::text[]"
}

// fillExpr is the SQL twin of Extract for a column over the jsonb expression data, or "" when the column
// cannot be computed from data (it comes from the envelope, a header or the receive time).
func fillExpr(c Column, data string) string {
	if c.From != FromResource || c.Path == "" {
		return ""
	}
	paths := append([]string{c.Path}, c.Fallbacks...)
	exprs := make([]string, len(paths))
	for i, p := range paths {
		exprs[i] = valueExpr(data+" #> "+sqlPath(p), data+" #>> "+sqlPath(p), c.Type, c.Convert)
	}
	if len(exprs) == 1 {
		return exprs[0]
	}
	return "COALESCE(" + strings.Join(exprs, ", ") + ")"
}

// valueExpr converts the jsonb j, whose #>> text is t, to typ.
func valueExpr(j, t, typ string, conv Converter) string {
	j, t = "("+j+")", "("+t+")"
	scalar := fmt.Sprintf("jsonb_typeof(%s) IN ('string', 'number', 'boolean')", j)
	switch typ {
	case TypeText:
		return fmt.Sprintf("CASE WHEN %s THEN %s END", scalar, t)
	case TypeBigint:
		return fmt.Sprintf("CASE WHEN %s !~ %s THEN NULL WHEN %s::numeric BETWEEN %d AND %d THEN %s::bigint END",
			t, sqlLiteral(bigintPattern), t, int64(math.MinInt64), int64(math.MaxInt64), t)
	case TypeInteger:
		return fmt.Sprintf("CASE WHEN %s !~ %s THEN NULL WHEN %s::numeric BETWEEN %d AND %d THEN %s::integer END",
			t, sqlLiteral(integerPattern), t, math.MinInt32, math.MaxInt32, t)
	case TypeNumeric:
		return fmt.Sprintf("CASE WHEN %s ~ %s THEN %s::numeric END", t, sqlLiteral(numericPattern), t)
	case TypeBoolean:
		return fmt.Sprintf("CASE WHEN %s IN ('true', 'false') THEN %s::boolean END", t, t)
	case TypeJSONB:
		return fmt.Sprintf("CASE WHEN jsonb_typeof(%s) <> 'null' THEN %s END", j, j)
	case TypeTextArray:
		return fmt.Sprintf("CASE WHEN jsonb_typeof(%s) = 'array' THEN ARRAY(SELECT e #>> '{}' FROM jsonb_array_elements(%s) WITH ORDINALITY AS a(e, i) WHERE jsonb_typeof(e) IN ('string', 'number', 'boolean') ORDER BY i) END", j, j)
	case TypeTimestamptz:
		return "CASE " + timeWhens(t, conv) + " END"
	}
	panic("replicator: no SQL conversion for type " + typ)
}

func timeWhens(t string, conv Converter) string {
	// interval * bigint goes through float8: whole seconds and the millisecond remainder each stay exact.
	unix := func(pattern, unit string) string {
		if unit == "second" {
			return fmt.Sprintf("WHEN %s ~ %s THEN 'epoch'::timestamptz + %s::bigint * interval '1 second'", t, sqlLiteral(pattern), t)
		}
		return fmt.Sprintf("WHEN %[1]s ~ %[2]s THEN 'epoch'::timestamptz + (%[1]s::bigint / 1000) * interval '1 second' + (%[1]s::bigint %% 1000) * interval '1 millisecond'",
			t, sqlLiteral(pattern))
	}
	iso := fmt.Sprintf("WHEN %s ~ %s THEN %s::timestamptz WHEN %s ~ %s THEN %s::timestamp AT TIME ZONE 'UTC'",
		t, sqlLiteral(isoZonedPattern), t, t, sqlLiteral(isoLocalPattern), t)
	switch conv {
	case ConvertUnixSeconds:
		return unix(unixSecPattern, "second")
	case ConvertUnixMillis:
		return unix(unixMilliPattern, "millisecond")
	case ConvertRFC1123:
		return fmt.Sprintf("WHEN %s ~ %s THEN %s::timestamptz", t, sqlLiteral(rfc1123Pattern), t)
	case ConvertAutoTime:
		return unix(unixSecPattern, "second") + " " + unix(autoMilliPattern, "millisecond") + " " + iso
	}
	return iso
}
