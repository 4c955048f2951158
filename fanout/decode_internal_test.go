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

// insertMessage is an Insert message in pgoutput's binary form with the columns rel places.
func insertMessage(rel *relation, body []byte) []byte {
	be := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	cols := make([][]byte, rel.ncols)
	cols[rel.colID] = be(42)
	cols[rel.colOrgID] = be(7)
	cols[rel.colIntegrationID] = be(8)
	cols[rel.colReceivedAt] = be(time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).Sub(pgEpoch).Microseconds())
	cols[rel.colDeliveryID] = []byte("evt_1")
	cols[rel.colContentType] = []byte("application/json")
	cols[rel.colHeaders] = append([]byte{1}, `{"Content-Type":"application/json","User-Agent":"Stripe/1.0"}`...)
	cols[rel.colBody] = body
	cols[rel.colSource] = []byte("webhook")
	msg := []byte{'I', 0, 0, 0, 1, 'N'}
	msg = binary.BigEndian.AppendUint16(msg, uint16(rel.ncols))
	for _, c := range cols {
		if c == nil {
			msg = append(msg, 'n')
			continue
		}
		msg = append(msg, 'b')
		msg = binary.BigEndian.AppendUint32(msg, uint32(len(c)))
		msg = append(msg, c...)
	}
	return msg
}

func stagingRelation() *relation {
	return &relation{ncols: 18, colID: 0, colReceivedAt: 1, colOrgID: 2, colIntegrationID: 3, colDeliveryID: 4,
		colContentType: 8, colHeaders: 9, colBody: 10, colOriginalReceivedAt: 15, colSource: 16, colBackfillJobID: 17}
}

// What decodeInsert keeps is a copy: the read buffer it came from may be reused at once.
func TestDecodeInsertCopiesOutOfTheBuffer(t *testing.T) {
	rel := stagingRelation()
	msg := insertMessage(rel, []byte(`{"id":"evt_1","object":"event"}`))
	c, err := decodeInsert(msg, rel)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msg {
		msg[i] = 'x'
	}
	if c.webhookID != 42 || c.orgID != 7 || c.integrationID != 8 || c.deliveryID != "evt_1" || c.contentType != "application/json" ||
		string(c.headers) != `{"Content-Type":"application/json","User-Agent":"Stripe/1.0"}` ||
		string(c.body) != `{"id":"evt_1","object":"event"}` || c.source != "webhook" || !c.originalReceivedAt.IsZero() {
		t.Fatalf("decoded %+v", c)
	}
	_ = append(c.headers, "ZZZZ"...)
	if string(c.body) != `{"id":"evt_1","object":"event"}` {
		t.Errorf("appending to the headers wrote into the body: %q", c.body)
	}
}

func BenchmarkDecodeInsert(b *testing.B) {
	rel := stagingRelation()
	msg := insertMessage(rel, make([]byte, 1600))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeInsert(msg, rel); err != nil {
			b.Fatal(err)
		}
	}
}
