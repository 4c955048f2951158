package replicator

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// EncodedArray is an upsert parameter already in PostgreSQL's binary array format: a one-dimensional array
// of Elem, NULLs allowed. Upsert's arguments are EncodedArrays, which a connection sends as they are once
// RegisterEncodedArrays has run on its type map.
//
// pgx would encode the typed slices through reflection, element by element, growing its parameter buffer from
// 256 bytes for every statement: under bench fanout (64 rows of about 1.6 KB a statement) that was about a
// fifth of the fanout process's CPU, most of it copying and zeroing the buffer as it doubled. Here each array
// is sized first and written once.
type EncodedArray struct {
	Elem  uint32 // the element type's OID
	Bytes []byte
}

// encodedArrayTypes are the array types Upsert's parameters have, by element OID: text[] for keys and text
// columns, jsonb[] for data, jsonb and text[] columns (a text[] per row travels as a JSON array).
var encodedArrayTypes = map[uint32]uint32{ // element OID: array OID
	pgtype.TextOID:        pgtype.TextArrayOID,
	pgtype.Int8OID:        pgtype.Int8ArrayOID,
	pgtype.Int4OID:        pgtype.Int4ArrayOID,
	pgtype.NumericOID:     pgtype.NumericArrayOID,
	pgtype.BoolOID:        pgtype.BoolArrayOID,
	pgtype.TimestamptzOID: pgtype.TimestamptzArrayOID,
	pgtype.JSONBOID:       pgtype.JSONBArrayOID,
}

// RegisterEncodedArrays makes m send EncodedArray parameters of Upsert's array types as they are, in binary;
// other values of those types are encoded as before.
func RegisterEncodedArrays(m *pgtype.Map) {
	for _, arrayOID := range encodedArrayTypes {
		t, ok := m.TypeForOID(arrayOID)
		if !ok {
			panic(fmt.Sprintf("replicator: pgx has no type for OID %d", arrayOID))
		}
		if _, done := t.Codec.(encodedArrayCodec); done {
			continue
		}
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: encodedArrayCodec{t.Codec}})
	}
}

// encodedArrayCodec is an array type's codec that also sends EncodedArrays.
type encodedArrayCodec struct{ pgtype.Codec }

func (c encodedArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(EncodedArray); ok {
		if format != pgtype.BinaryFormatCode {
			return nil
		}
		return encodedArrayPlan{oid: oid}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

type encodedArrayPlan struct{ oid uint32 }

func (p encodedArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.(EncodedArray)
	if encodedArrayTypes[a.Elem] != p.oid {
		return nil, fmt.Errorf("replicator: an array of element type %d sent as type %d", a.Elem, p.oid)
	}
	return append(buf, a.Bytes...), nil
}

// arrayWriter writes a one-dimensional binary array: the header (dimensions, NULL flag, element type, length,
// lower bound), then each element as its length (-1 for NULL) and bytes.
type arrayWriter struct {
	buf     []byte
	hasNull bool
}

const arrayHeaderLen = 20

func newArrayWriter(elem uint32, n, size int) *arrayWriter {
	w := &arrayWriter{buf: make([]byte, arrayHeaderLen, arrayHeaderLen+4*n+size)}
	binary.BigEndian.PutUint32(w.buf[0:], 1)
	binary.BigEndian.PutUint32(w.buf[8:], elem)
	binary.BigEndian.PutUint32(w.buf[12:], uint32(n))
	binary.BigEndian.PutUint32(w.buf[16:], 1)
	return w
}

func (w *arrayWriter) null() {
	w.hasNull = true
	w.buf = binary.BigEndian.AppendUint32(w.buf, 0xffffffff)
}

func (w *arrayWriter) bytes(b []byte) {
	w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(len(b)))
	w.buf = append(w.buf, b...)
}

func (w *arrayWriter) string(s string) {
	w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(len(s)))
	w.buf = append(w.buf, s...)
}

// jsonb writes a jsonb element: its binary format is a version byte (1), then the JSON text.
func (w *arrayWriter) jsonb(b []byte) {
	w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(1+len(b)))
	w.buf = append(w.buf, 1)
	w.buf = append(w.buf, b...)
}

func (w *arrayWriter) done(elem uint32) EncodedArray {
	if w.hasNull {
		binary.BigEndian.PutUint32(w.buf[4:], 1)
	}
	return EncodedArray{Elem: elem, Bytes: w.buf}
}

// pgEpochMicros is 2000-01-01 UTC, where PostgreSQL's binary timestamps count from, in Unix microseconds.
const pgEpochMicros = 946_684_800_000_000

// numericPlan encodes numeric elements: its binary format (base-10000 digits) is pgx's to get right. The plan
// holds no state, so it is shared.
var numericPlan = pgtype.NewMap().PlanEncode(pgtype.NumericOID, pgtype.BinaryFormatCode, pgtype.Numeric{})

// encodeColumn encodes column ci of rows as an array of the column's type, nil as NULL. A value of another Go
// type than the column's is a bug in Extract, not bad input: it panics.
func encodeColumn(service string, c Column, ci int, rows []Row) EncodedArray {
	switch c.Type {
	case TypeText:
		size := 0
		for _, r := range rows {
			if s, ok := r.Values[ci].(string); ok {
				size += len(s)
			}
		}
		return encodeValues(service, c, ci, rows, pgtype.TextOID, size, (*arrayWriter).string)
	case TypeBigint:
		return encodeValues(service, c, ci, rows, pgtype.Int8OID, 8*len(rows), func(w *arrayWriter, v int64) {
			w.buf = binary.BigEndian.AppendUint32(w.buf, 8)
			w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(v))
		})
	case TypeInteger:
		return encodeValues(service, c, ci, rows, pgtype.Int4OID, 4*len(rows), func(w *arrayWriter, v int32) {
			w.buf = binary.BigEndian.AppendUint32(w.buf, 4)
			w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(v))
		})
	case TypeBoolean:
		return encodeValues(service, c, ci, rows, pgtype.BoolOID, len(rows), func(w *arrayWriter, v bool) {
			w.buf = binary.BigEndian.AppendUint32(w.buf, 1)
			if v {
				w.buf = append(w.buf, 1)
			} else {
				w.buf = append(w.buf, 0)
			}
		})
	case TypeTimestamptz:
		return encodeValues(service, c, ci, rows, pgtype.TimestamptzOID, 8*len(rows), func(w *arrayWriter, v time.Time) {
			w.buf = binary.BigEndian.AppendUint32(w.buf, 8)
			w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(v.Unix()*1_000_000+int64(v.Nanosecond()/1000)-pgEpochMicros))
		})
	case TypeNumeric:
		return encodeValues(service, c, ci, rows, pgtype.NumericOID, 16*len(rows), func(w *arrayWriter, v pgtype.Numeric) {
			at := len(w.buf)
			out, err := numericPlan.Encode(v, append(w.buf, 0, 0, 0, 0))
			if err != nil {
				panic(fmt.Sprintf("replicator: %s column %s: encoding %v: %v", service, c.Name, v, err))
			}
			if out == nil { // an invalid Numeric is NULL
				w.buf = w.buf[:at]
				w.null()
				return
			}
			w.buf = out
			binary.BigEndian.PutUint32(w.buf[at:], uint32(len(w.buf)-at-4))
		})
	case TypeJSONB:
		size := 0
		for _, r := range rows {
			if j, ok := r.Values[ci].(json.RawMessage); ok {
				size += 1 + len(j)
			}
		}
		return encodeValues(service, c, ci, rows, pgtype.JSONBOID, size, func(w *arrayWriter, v json.RawMessage) { w.jsonb(v) })
	case TypeTextArray:
		return encodeValues(service, c, ci, rows, pgtype.JSONBOID, 0, func(w *arrayWriter, v []string) {
			b, err := json.Marshal(v)
			if err != nil {
				panic(fmt.Sprintf("replicator: encoding text[]: %v", err)) // []string always encodes
			}
			w.jsonb(b)
		})
	}
	panic("replicator: no array encoding for type " + c.Type)
}

// encodeValues writes column ci of rows as an array of elem: each value of Go type V by put, nil as NULL.
func encodeValues[V any](service string, c Column, ci int, rows []Row, elem uint32, size int, put func(*arrayWriter, V)) EncodedArray {
	w := newArrayWriter(elem, len(rows), size)
	for _, r := range rows {
		switch v := r.Values[ci].(type) {
		case nil:
			w.null()
		case V:
			put(w, v)
		default:
			panic(fmt.Sprintf("replicator: %s column %s (%s) holds a %T", service, c.Name, c.Type, v))
		}
	}
	return w.done(elem)
}
