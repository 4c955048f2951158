package ingest

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	errOrgBudget     = errors.New("this organization has too many request body bytes in flight; retry later")
	errProcessBudget = errors.New("webhookdb has too many request body bytes in flight; retry later")
)

// budget counts request body bytes in flight (reserved as the body buffer grows, released once the request is
// answered), per org and in all. An org over its share is refused while other orgs still get in; the process
// total protects the process. A request of an org that holds nothing else may go past the org's share, so an
// integration whose body limit is above the share can still be served, but only while a whole share stays free
// for the other orgs: one org's large body never leaves another without room.
type budget struct {
	total, perOrg int64
	gauge         prometheus.Gauge

	mu    sync.Mutex
	used  int64
	byOrg map[int64]int64
}

func newBudget(total, perOrg int64, gauge prometheus.Gauge) *budget {
	return &budget{total: total, perOrg: perOrg, gauge: gauge, byOrg: map[int64]int64{}}
}

// reserve adds n bytes to org's and the process's counts; mine is what the caller already holds for this request.
func (b *budget) reserve(org, mine, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	orgUsed := b.byOrg[org]
	limit := b.total
	if orgUsed+n > b.perOrg {
		if orgUsed > mine {
			return errOrgBudget
		}
		limit = b.total - b.perOrg
	}
	if b.used+n > limit {
		return errProcessBudget
	}
	b.used += n
	b.byOrg[org] = orgUsed + n
	if b.gauge != nil {
		b.gauge.Add(float64(n))
	}
	return nil
}

func (b *budget) release(org, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if left := b.byOrg[org] - n; left > 0 {
		b.byOrg[org] = left
	} else {
		delete(b.byOrg, org)
	}
	if b.gauge != nil {
		b.gauge.Sub(float64(n))
	}
}
