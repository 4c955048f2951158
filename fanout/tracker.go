package fanout

import (
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// txnState is one staging transaction of the stream, from its Begin until every row is settled.
type txnState struct {
	commitLSN  pglogrepl.LSN // Begin's final LSN: the commit record
	endLSN     pglogrepl.LSN // Commit's transaction end LSN: what may be acknowledged
	commitTime time.Time
	pending    int  // rows not yet applied, parked or failed
	committed  bool // its Commit message has arrived
}

// tracker knows which transactions are settled. The acknowledged position only moves over a prefix of
// settled transactions, so a later transaction settling first never acknowledges an earlier one.
type tracker struct {
	mu    sync.Mutex
	txns  []*txnState // in stream order; txns[head:] are live
	head  int
	acked pglogrepl.LSN
}

// begin registers a transaction; the receive loop adds its rows to pending as it decodes them.
func (t *tracker) begin(x *txnState) {
	t.mu.Lock()
	t.txns = append(t.txns, x)
	t.mu.Unlock()
}

func (t *tracker) addPending(x *txnState, n int) {
	t.mu.Lock()
	x.pending += n
	t.mu.Unlock()
}

// commit marks a transaction's Commit as received.
func (t *tracker) commit(x *txnState, end pglogrepl.LSN) {
	t.mu.Lock()
	x.endLSN = end
	x.committed = true
	t.advance()
	t.mu.Unlock()
}

// settle marks changes as done (applied, parked, failed or skipped).
func (t *tracker) settle(changes []*change) {
	t.mu.Lock()
	for _, c := range changes {
		if c.txn != nil {
			c.txn.pending--
		}
	}
	t.advance()
	t.mu.Unlock()
}

func (t *tracker) advance() {
	for t.head < len(t.txns) {
		x := t.txns[t.head]
		if !x.committed || x.pending > 0 {
			break
		}
		t.acked = x.endLSN
		t.txns[t.head] = nil
		t.head++
	}
	// compact once the dead prefix dominates, so the slice does not grow forever
	if t.head > 1024 && t.head*2 > len(t.txns) {
		n := copy(t.txns, t.txns[t.head:])
		clear(t.txns[n:])
		t.txns = t.txns[:n]
		t.head = 0
	}
}

// state returns the acknowledged position, whether nothing is in flight, and the commit time of the oldest
// unsettled transaction (zero when none).
func (t *tracker) state() (acked pglogrepl.LSN, idle bool, oldest time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head < len(t.txns) {
		oldest = t.txns[t.head].commitTime
	}
	return t.acked, t.head == len(t.txns), oldest
}
