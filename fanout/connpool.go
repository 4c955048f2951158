package fanout

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// connPool holds connections to org databases, at most max open across all orgs. An org has at most one
// transaction in flight (the scheduler runs one job per org at a time), so one idle connection per org is
// kept; to open a connection beyond max, the least recently used idle one is closed. With max >= workers an
// acquire never waits.
type connPool struct {
	max         int
	idleTimeout time.Duration
	metrics     *metrics

	mu   sync.Mutex
	open int
	idle map[int64]*list.Element // org id -> element of lru holding *idleConn
	lru  *list.List              // front: most recently released
}

type idleConn struct {
	orgID int64
	conn  *pgx.Conn
	since time.Time
}

func newConnPool(max int, idleTimeout time.Duration, m *metrics) *connPool {
	return &connPool{max: max, idleTimeout: idleTimeout, metrics: m, idle: map[int64]*list.Element{}, lru: list.New()}
}

// acquire returns an idle connection of the org (reused = true) or dials a new one.
func (p *connPool) acquire(ctx context.Context, orgID int64, dial func(context.Context) (*pgx.Conn, error)) (conn *pgx.Conn, reused bool, err error) {
	p.mu.Lock()
	if e := p.idle[orgID]; e != nil {
		ic := p.lru.Remove(e).(*idleConn)
		delete(p.idle, orgID)
		p.mu.Unlock()
		return ic.conn, true, nil
	}
	var evict *pgx.Conn
	if p.open >= p.max {
		if e := p.lru.Back(); e != nil {
			ic := p.lru.Remove(e).(*idleConn)
			delete(p.idle, ic.orgID)
			evict = ic.conn
			p.open--
		}
	}
	p.open++
	p.metrics.orgConns.Set(float64(p.open))
	p.mu.Unlock()
	if evict != nil {
		closeConn(evict)
	}
	p.metrics.orgConnects.Inc()
	conn, err = dial(ctx)
	if err != nil {
		p.mu.Lock()
		p.open--
		p.metrics.orgConns.Set(float64(p.open))
		p.mu.Unlock()
		return nil, false, err
	}
	return conn, false, nil
}

// hasIdle reports whether the org has an idle connection.
func (p *connPool) hasIdle(orgID int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idle[orgID] != nil
}

// release returns a connection; one that failed or is in an unknown state is closed instead.
func (p *connPool) release(orgID int64, conn *pgx.Conn, healthy bool) {
	if !healthy || conn.IsClosed() || conn.PgConn().TxStatus() != 'I' {
		closeConn(conn)
		p.mu.Lock()
		p.open--
		p.metrics.orgConns.Set(float64(p.open))
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	var extra *pgx.Conn
	if e := p.idle[orgID]; e != nil { // cannot happen with one job per org; keep the newer one
		extra = p.lru.Remove(e).(*idleConn).conn
		p.open--
	}
	p.idle[orgID] = p.lru.PushFront(&idleConn{orgID: orgID, conn: conn, since: time.Now()})
	p.metrics.orgConns.Set(float64(p.open))
	p.mu.Unlock()
	if extra != nil {
		closeConn(extra)
	}
}

// closeIdle closes connections idle longer than the idle timeout (all of them when all is set).
func (p *connPool) closeIdle(all bool) {
	var closing []*pgx.Conn
	p.mu.Lock()
	cutoff := time.Now().Add(-p.idleTimeout)
	for e := p.lru.Back(); e != nil; {
		ic := e.Value.(*idleConn)
		if !all && ic.since.After(cutoff) {
			break // the rest are newer
		}
		prev := e.Prev()
		p.lru.Remove(e)
		delete(p.idle, ic.orgID)
		p.open--
		closing = append(closing, ic.conn)
		e = prev
	}
	p.metrics.orgConns.Set(float64(p.open))
	p.mu.Unlock()
	for _, c := range closing {
		closeConn(c)
	}
}

// forget closes the org's idle connection (its server restarted or moved).
func (p *connPool) forget(orgID int64) {
	p.mu.Lock()
	e := p.idle[orgID]
	var c *pgx.Conn
	if e != nil {
		c = p.lru.Remove(e).(*idleConn).conn
		delete(p.idle, orgID)
		p.open--
		p.metrics.orgConns.Set(float64(p.open))
	}
	p.mu.Unlock()
	if c != nil {
		closeConn(c)
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
