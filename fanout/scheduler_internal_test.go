package fanout

import (
	"bytes"
	"testing"
)

func queued(orgID int64, n, body int) []*change {
	out := make([]*change, n)
	for i := range out {
		c := &change{orgID: orgID, webhookID: int64(i), headers: []byte(`{"Content-Type":"application/json"}`), body: bytes.Repeat([]byte("x"), body)}
		c.size = int64(len(c.headers)+len(c.body)) + changeOverhead
		c.held = c.size
		out[i] = c
	}
	return out
}

func TestSchedulerShedsYoungestOrgsWithoutConnections(t *testing.T) {
	cfg := Config{}.WithDefaults()
	withConn := int64(2)
	s := newScheduler(cfg, func(id int64) bool { return id == withConn })
	const body = 1000
	per := int64(len(`{"Content-Type":"application/json"}`) + body)

	// org 4 is busy: its job is running and more changes queue behind it
	s.enqueue(queued(4, 2, body))
	busy := s.next()
	if busy.org.id != 4 {
		t.Fatalf("first job is org %d's", busy.org.id)
	}
	s.enqueue(queued(4, 3, body))
	s.enqueue(queued(1, 3, body)) // oldest ready
	s.enqueue(queued(2, 3, body)) // has an idle connection
	s.enqueue(queued(3, 3, body))
	s.orgs[3].parked = true       // its queue is parked as references
	s.enqueue(queued(5, 3, body)) // youngest

	// A small want takes the youngest eligible org only.
	freed, n := s.shed(1)
	if n != 3 || freed != 3*per {
		t.Fatalf("shed(1) = %d bytes, %d changes; want %d, 3 (org 5's)", freed, n, 3*per)
	}
	for id, o := range s.orgs {
		for _, c := range o.queue {
			if c.shed != (id == 5) {
				t.Fatalf("org %d: change shed=%v", id, c.shed)
			}
		}
	}
	// A large want goes on to org 1, and never to orgs with a connection, parked or busy ones.
	freed, n = s.shed(1 << 30)
	if n != 3 || freed != 3*per {
		t.Fatalf("shed(all) = %d bytes, %d changes; want %d, 3 (org 1's)", freed, n, 3*per)
	}
	if freed, n = s.shed(1 << 30); n != 0 || freed != 0 {
		t.Fatalf("shedding again freed %d bytes of %d changes", freed, n)
	}
	for id, want := range map[int64]int64{1: 0, 2: 3 * per, 3: 3 * per, 4: 3 * per, 5: 0} {
		if got := s.orgs[id].payloadBytes; got != want {
			t.Fatalf("org %d holds %d payload bytes by its count, want %d", id, got, want)
		}
	}

	// A job of shed changes sizes its batch by what was received and releases what is held.
	s.mu.Lock()
	j := s.takeQueue(s.orgs[1], jobApply, cfg.MaxApplyRows, cfg.MaxApplyBytes)
	s.mu.Unlock()
	if len(j.changes) != 3 || j.bytes != 3*(per+changeOverhead) || j.held != 3*changeOverhead {
		t.Fatalf("job of org 1: %d changes, bytes %d, held %d", len(j.changes), j.bytes, j.held)
	}
	for _, c := range j.changes {
		if c.body != nil || c.headers != nil {
			t.Fatal("a shed change still holds its payload")
		}
	}
	// A job of held changes takes their payload off the org's count.
	s.mu.Lock()
	j = s.takeQueue(s.orgs[2], jobApply, cfg.MaxApplyRows, cfg.MaxApplyBytes)
	s.mu.Unlock()
	if j.held != j.bytes || s.orgs[2].payloadBytes != 0 {
		t.Fatalf("job of org 2: held %d of %d bytes; the org still counts %d payload bytes", j.held, j.bytes, s.orgs[2].payloadBytes)
	}
}
