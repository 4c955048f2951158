package fanout

import (
	"container/list"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// connPool holds connections to org databases, capped per database server: a connection is bound to one
// database, so the cap is what decides how many orgs of a server keep theirs open between transactions. An
// org has at most one transaction in flight (the scheduler runs one job per org at a time), so one idle
// connection per org is kept; to open a connection beyond its server's cap, the server's least recently
// used idle one is closed. With a cap >= workers an acquire never waits.
type connPool struct {
	// fixedCap, when set, is every server's cap; else a server's cap is learnt from its max_connections (see
	// setCap) and is workers until then.
	fixedCap    int
	workers     int
	idleTimeout time.Duration
	metrics     *metrics
	logger      *slog.Logger

	mu      sync.Mutex
	open    int
	servers map[string]*serverConns
	// lastEviction is when a connection last made room for another under a server's cap
	lastEviction time.Time
	idle         map[int64]*list.Element // org id -> element of its server's lru holding *idleConn
}

// serverConns are the connections to one database server.
type serverConns struct {
	cap, open int
	capKnown  bool
	lru       *list.List // of *idleConn; front: most recently released
	// plainSince is when a connection that would have taken TLS (sslmode=prefer) found the server without it
	plainSince time.Time
	// churn counts evictions of connections used within churnWindow since churnSince; warnedAt is the last
	// warning about it
	churn      int
	churnSince time.Time
	warnedAt   time.Time
}

// churnWindow: a connection evicted within it of its last use belonged to an org with steady traffic, which
// will pay a new backend on its next visit; churnWarnEvery spaces the warnings about it.
const (
	churnWindow    = 10 * time.Second
	churnWarnEvery = time.Minute
	churnWarnMin   = 10 // recently used connections evicted within churnWarnEvery before a warning
)

type idleConn struct {
	orgID  int64
	server string
	conn   *pgx.Conn
	since  time.Time
}

func newConnPool(fixedCap, workers int, idleTimeout time.Duration, m *metrics, logger *slog.Logger) *connPool {
	return &connPool{fixedCap: fixedCap, workers: workers, idleTimeout: idleTimeout, metrics: m, logger: logger,
		servers: map[string]*serverConns{}, idle: map[int64]*list.Element{}}
}

func (p *connPool) server(name string) *serverConns {
	s := p.servers[name]
	if s == nil {
		s = &serverConns{cap: p.workers, lru: list.New()}
		if p.fixedCap > 0 {
			s.cap, s.capKnown = p.fixedCap, true
		}
		p.servers[name] = s
	}
	return s
}

// needsCap reports whether the server's cap is still to be learnt.
func (p *connPool) needsCap(server string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.server(server).capKnown
}

// setCap sets a server's cap (never under workers).
func (p *connPool) setCap(server string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.server(server)
	s.cap, s.capKnown = max(n, p.workers), true
}

// acquire returns an idle connection of the org (reused = true) or dials a new one on the org's server.
func (p *connPool) acquire(ctx context.Context, orgID int64, server string, dial func(context.Context) (*pgx.Conn, error)) (conn *pgx.Conn, reused bool, err error) {
	p.mu.Lock()
	if e := p.idle[orgID]; e != nil {
		ic := e.Value.(*idleConn)
		p.servers[ic.server].lru.Remove(e)
		delete(p.idle, orgID)
		if ic.server == server {
			p.mu.Unlock()
			return ic.conn, true, nil
		}
		// the org moved to another server: its old connection goes
		p.servers[ic.server].open--
		p.open--
		defer closeConn(ic.conn)
	}
	s := p.server(server)
	var (
		evict *pgx.Conn
		warn  int // recently used connections evicted since the last warning, when it is time for another
	)
	if s.open >= s.cap {
		if e := s.lru.Back(); e != nil {
			ic := s.lru.Remove(e).(*idleConn)
			delete(p.idle, ic.orgID)
			evict = ic.conn
			s.open--
			p.open--
			p.lastEviction = time.Now()
			warn = s.evicted(p.lastEviction, ic.since)
		}
	}
	s.open++
	p.open++
	p.metrics.orgConns.Set(float64(p.open))
	capacity := s.cap
	p.mu.Unlock()
	if evict != nil {
		p.metrics.orgEvictions.Inc()
		closeConn(evict)
	}
	if warn > 0 {
		p.logger.WarnContext(ctx, "org connections churn: the server has more orgs with steady traffic than the fanout's connection cap, so their visits open new backends; raise the server's max_connections or --max-org-connections",
			slog.String("server", server), slog.Int("cap", capacity), slog.Int("recently_used_evicted", warn))
	}
	p.metrics.orgConnects.Inc()
	conn, err = dial(ctx)
	if err != nil {
		p.mu.Lock()
		s.open--
		p.open--
		p.metrics.orgConns.Set(float64(p.open))
		p.mu.Unlock()
		return nil, false, err
	}
	return conn, false, nil
}

// evicted records the eviction of a connection last used at lastUse, and returns how many recently used ones
// were evicted since the last warning when it is time to warn again (else 0).
func (s *serverConns) evicted(now, lastUse time.Time) int {
	if now.Sub(lastUse) >= churnWindow {
		return 0
	}
	if now.Sub(s.churnSince) > churnWarnEvery { // count anew each minute
		s.churn, s.churnSince = 0, now
	}
	s.churn++
	// One eviction is the cap doing its work; many within a minute are orgs taking turns at the connections.
	if s.churn < churnWarnMin || now.Sub(s.warnedAt) < churnWarnEvery {
		return 0
	}
	n := s.churn
	s.churn, s.churnSince, s.warnedAt = 0, now, now
	return n
}

// plainRecheck is how long a server found without TLS is dialled without trying TLS first, before a dial
// tries again (a server may be given TLS).
const plainRecheck = 10 * time.Minute

// servesPlain reports whether the server was found without TLS within plainRecheck.
func (p *connPool) servesPlain(server string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.servers[server]
	return s != nil && !s.plainSince.IsZero() && time.Since(s.plainSince) < plainRecheck
}

// notePlain records that a connection which preferred TLS found the server without it.
func (p *connPool) notePlain(server string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.server(server).plainSince = time.Now()
}

// evicting reports whether a connection was evicted within churnWindow: some server has more orgs with work
// than its cap holds connections, so visiting an org without a connection costs a new backend, and another
// org its connection.
func (p *connPool) evicting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Since(p.lastEviction) < churnWindow
}

// hasIdle reports whether the org has an idle connection.
func (p *connPool) hasIdle(orgID int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idle[orgID] != nil
}

// release returns a connection acquired for the org on server; one that failed or is in an unknown state is
// closed instead.
func (p *connPool) release(orgID int64, server string, conn *pgx.Conn, healthy bool) {
	p.mu.Lock()
	s := p.server(server)
	if !healthy || conn.IsClosed() || conn.PgConn().TxStatus() != 'I' {
		s.open--
		p.open--
		p.metrics.orgConns.Set(float64(p.open))
		p.mu.Unlock()
		closeConn(conn)
		return
	}
	var extra *pgx.Conn
	if e := p.idle[orgID]; e != nil { // cannot happen with one job per org; keep the newer one
		ic := e.Value.(*idleConn)
		p.servers[ic.server].lru.Remove(e)
		p.servers[ic.server].open--
		p.open--
		extra = ic.conn
	}
	p.idle[orgID] = s.lru.PushFront(&idleConn{orgID: orgID, server: server, conn: conn, since: time.Now()})
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
	for _, s := range p.servers {
		for e := s.lru.Back(); e != nil; {
			ic := e.Value.(*idleConn)
			if !all && ic.since.After(cutoff) {
				break // the rest are newer
			}
			prev := e.Prev()
			s.lru.Remove(e)
			delete(p.idle, ic.orgID)
			s.open--
			p.open--
			closing = append(closing, ic.conn)
			e = prev
		}
	}
	p.metrics.orgConns.Set(float64(p.open))
	p.mu.Unlock()
	for _, c := range closing {
		closeConn(c)
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
