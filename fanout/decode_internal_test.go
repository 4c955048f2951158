package fanout

import (
	"encoding/binary"
	"testing"
	"time"
)

// Both forms pgoutput may send a value in decode to the same thing.
func TestTupleDecodesTextAndBinaryAlike(t *testing.T) {
	at := time.Date(2026, 12, 2, 13, 4, 5, 123456000, time.UTC)
	be := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	tup := tuple{
		vals: [][]byte{
			[]byte("9007199254740993"), be(9007199254740993),
			[]byte("2026-12-02 13:04:05.123456+00"), be(at.Sub(pgEpoch).Microseconds()),
			[]byte(`\x00ff41`), {0x00, 0xff, 0x41},
			[]byte(`{"a": 1}`), append([]byte{1}, `{"a": 1}`...),
			nil,
		},
		nulls:  []bool{false, false, false, false, false, false, false, false, true},
		binary: []bool{false, true, false, true, false, true, false, true, false},
	}
	for _, i := range []int{0, 1} {
		if n, err := tup.int8(i); err != nil || n != 9007199254740993 {
			t.Errorf("int8 %d: %d, %v", i, n, err)
		}
	}
	for _, i := range []int{2, 3} {
		if ts, err := tup.timestamptz(i); err != nil || !ts.Equal(at) {
			t.Errorf("timestamptz %d: %s, %v", i, ts, err)
		}
	}
	for _, i := range []int{4, 5} {
		if b, err := tup.bytea(i); err != nil || string(b) != "\x00\xffA" {
			t.Errorf("bytea %d: %q, %v", i, b, err)
		}
	}
	for _, i := range []int{6, 7} {
		if b, err := tup.jsonb(i); err != nil || string(b) != `{"a": 1}` {
			t.Errorf("jsonb %d: %q, %v", i, b, err)
		}
	}
	if _, err := tup.int8(8); err == nil {
		t.Error("a NULL id decoded")
	}
	bad := tuple{vals: [][]byte{{1, 2, 3}, {2, '{', '}'}}, nulls: []bool{false, false}, binary: []bool{true, true}}
	if _, err := bad.int8(0); err == nil {
		t.Error("a 3-byte binary bigint decoded")
	}
	if _, err := bad.jsonb(1); err == nil {
		t.Error("an unknown jsonb version decoded")
	}
}
