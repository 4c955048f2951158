package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// heartbeatPrefix marks the fanout's heartbeat messages in the WAL.
const heartbeatPrefix = "webhookdb-heartbeat"

// shutdownGrace is how long jobs running at shutdown may take to finish; what they do not finish is replayed.
const shutdownGrace = 5 * time.Second

// session is one replication connection and the workers applying what it reads. Nothing survives a session
// but durable state: a new session replays from the slot's confirmed position.
type session struct {
	c       *Consumer
	conn    *pgconn.PgConn
	sched   *scheduler
	tracker tracker

	inFlight atomic.Int64
	space    chan struct{} // a worker released in-flight bytes
	fatal    chan error    // a worker hit an error only a new session can clear

	// receive loop state
	rels          map[uint32]*relation
	cur           *txnState
	seq           int32
	gather        []*change
	gatherBytes   int64
	gatherStart   time.Time
	walEnd        pglogrepl.LSN // highest keepalive WAL end
	lastCommitEnd pglogrepl.LSN // highest commit end received
	reported      pglogrepl.LSN // flush position last reported
	lastStatus    time.Time
	lastHeartbeat atomic.Int64 // unix nanos of the last heartbeat seen in the stream
	deadline      time.Time
}

func (c *Consumer) runSession(ctx context.Context) error {
	if err := c.EnsureSlot(ctx); err != nil {
		return err
	}
	var confirmedText string
	if err := c.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.Slot).Scan(&confirmedText); err != nil {
		return fmt.Errorf("error reading the slot's confirmed position: %w", err)
	}
	confirmed, err := pglogrepl.ParseLSN(confirmedText)
	if err != nil {
		return fmt.Errorf("error parsing the slot's confirmed position: %w", err)
	}
	conn, err := pgconn.ConnectConfig(ctx, c.replCfg)
	if err != nil {
		return fmt.Errorf("error opening the replication connection: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("error identifying the application database: %w", err)
	}
	c.source = sys.SystemID + "/" + sys.DBName
	// Start at 0/0: the server then starts at the slot's confirmed position. The server's current WAL
	// position (IDENTIFY_SYSTEM) would skip everything not yet acknowledged.
	err = pglogrepl.StartReplication(ctx, conn, c.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names '" + c.cfg.Publication + "'",
			"messages 'true'",
			// Values in their binary send form: the body crosses as its bytes, not as hex text twice its
			// size that the walsender encodes and the fanout decodes; integers and times need no parsing.
			"binary 'true'",
		},
	})
	if err != nil {
		return fmt.Errorf("error starting replication on slot %s: %w", c.cfg.Slot, err)
	}
	// Read after the slot is ours: a previous process still holding it may have parked more until then.
	parked, err := c.loadParked(ctx)
	if err != nil {
		return err
	}
	s := &session{
		c:        c,
		conn:     conn,
		sched:    newScheduler(c.cfg, c.conns.hasIdle),
		space:    make(chan struct{}, 1),
		fatal:    make(chan error, 1),
		rels:     map[uint32]*relation{},
		reported: confirmed,
	}
	s.tracker.acked = confirmed
	s.lastHeartbeat.Store(time.Now().UnixNano())
	s.sched.loadParked(parked)
	c.cfg.Logger.InfoContext(ctx, "fanout replication started", slog.String("confirmed_lsn", confirmed.String()), slog.Int("parked_orgs", len(parked)))

	// Jobs outlive ctx by a grace period at shutdown, so an org transaction under way can commit.
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	var workers, background sync.WaitGroup
	for range c.cfg.Workers {
		workers.Go(func() { s.work(jobCtx) })
	}
	background.Go(func() { s.wakeLoop(bgCtx) })
	background.Go(func() { s.heartbeatLoop(bgCtx) })
	background.Go(func() { s.lagLoop(bgCtx) })

	err = s.receive(ctx)

	stopBackground()
	s.sched.close()
	graceful := err == nil
	if graceful {
		t := time.AfterFunc(shutdownGrace, cancelJobs)
		defer t.Stop()
	} else {
		cancelJobs()
	}
	workers.Wait()
	background.Wait()
	if graceful {
		// Acknowledge what the last jobs applied, so the next start replays less.
		s.lastStatus = time.Time{}
		_ = s.sendStatus(time.Now())
	}
	return err
}

// receive reads the stream until ctx ends (nil) or an error.
func (s *session) receive(ctx context.Context) error {
	cfg := s.c.cfg
	nextStatus := time.Now()
	for {
		if ctx.Err() != nil {
			return nil
		}
		select {
		case err := <-s.fatal:
			return err
		default:
		}
		now := time.Now()
		if len(s.gather) > 0 && now.Sub(s.gatherStart) >= cfg.BatchDelay {
			s.flush()
		}
		acked, _, _ := s.tracker.state()
		if !now.Before(nextStatus) || (acked > s.reported && now.Sub(s.lastStatus) >= 100*time.Millisecond) {
			if err := s.sendStatus(now); err != nil {
				return err
			}
			nextStatus = now.Add(cfg.StatusInterval)
		}

		if s.inFlight.Load() >= cfg.MaxInFlightBytes {
			s.flush()
			if s.shedPayloads() {
				continue
			}
			// Full: stop reading. The server keeps the stream (spilling big transactions to disk); status
			// updates keep going out so the server does not time the connection out.
			t := time.NewTimer(time.Until(nextStatus))
			select {
			case <-s.space:
			case <-t.C:
			case <-ctx.Done():
			case err := <-s.fatal:
				t.Stop()
				return err
			}
			t.Stop()
			continue
		}

		// Wake for the next status update, the batch delay, and at least every 100ms to notice acks.
		deadline := now.Add(100 * time.Millisecond).Truncate(100 * time.Millisecond)
		if nextStatus.Before(deadline) {
			deadline = nextStatus
		}
		if len(s.gather) > 0 {
			if d := s.gatherStart.Add(cfg.BatchDelay); d.Before(deadline) {
				deadline = d
			}
		}
		if !deadline.Equal(s.deadline) {
			if err := s.conn.Conn().SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("error setting the read deadline: %w", err)
			}
			s.deadline = deadline
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("error receiving from the replication stream: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("error parsing keepalive: %w", err)
				}
				s.walEnd = max(s.walEnd, k.ServerWALEnd)
				if k.ReplyRequested {
					if err := s.sendStatus(time.Now()); err != nil {
						return err
					}
					nextStatus = time.Now().Add(cfg.StatusInterval)
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("error parsing XLogData: %w", err)
				}
				if err := s.handle(x.WALData); err != nil {
					return err
				}
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("the server ended the replication stream")
		}
	}
}

// handle decodes one pgoutput message.
func (s *session) handle(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case 'I':
		if s.cur == nil {
			return errors.New("insert outside a transaction")
		}
		if len(data) < 5 {
			return errors.New("short insert message")
		}
		relID := uint32(data[1])<<24 | uint32(data[2])<<16 | uint32(data[3])<<8 | uint32(data[4])
		rel, ok := s.rels[relID]
		if !ok {
			return fmt.Errorf("insert into relation %d before its Relation message", relID)
		}
		if rel == nil {
			s.c.cfg.Logger.Warn("ignoring an insert into a relation that is not staging.webhooks", slog.Uint64("relation_id", uint64(relID)))
			return nil
		}
		ch, err := decodeInsert(data, rel)
		if err != nil {
			return fmt.Errorf("error decoding a staging row: %w", err)
		}
		ch.pos = position{lsn: s.cur.commitLSN, seq: s.seq}
		ch.txn = s.cur
		s.seq++
		s.tracker.addPending(s.cur, 1)
		s.inFlight.Add(ch.size)
		if len(s.gather) == 0 {
			s.gatherStart = time.Now()
		}
		s.gather = append(s.gather, ch)
		s.gatherBytes += ch.size
		if len(s.gather) >= s.c.cfg.MaxBatchRows || s.gatherBytes >= int64(s.c.cfg.MaxBatchBytes) {
			s.flush()
		}
		return nil
	case 'B', 'C', 'R', 'M':
	default:
		return nil // types, origins, truncates: nothing to do
	}
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("error parsing a %q message: %w", data[0], err)
	}
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		if s.lastCommitEnd == 0 {
			s.c.cfg.Logger.Debug("first transaction of the session", slog.String("commit_lsn", m.FinalLSN.String()))
		}
		s.cur = &txnState{commitLSN: m.FinalLSN, commitTime: m.CommitTime}
		s.seq = 0
		s.tracker.begin(s.cur)
	case *pglogrepl.CommitMessage:
		if s.cur == nil {
			return errors.New("commit outside a transaction")
		}
		s.tracker.commit(s.cur, m.TransactionEndLSN)
		s.lastCommitEnd = max(s.lastCommitEnd, m.TransactionEndLSN)
		s.cur = nil
	case *pglogrepl.RelationMessage:
		s.c.cfg.Logger.Debug("relation", slog.String("namespace", m.Namespace), slog.String("name", m.RelationName), slog.Uint64("relation_id", uint64(m.RelationID)))
		rel, err := newRelation(m)
		switch {
		case errors.Is(err, errNotStaging):
			s.rels[m.RelationID] = nil
		case err != nil:
			return err
		default:
			s.rels[m.RelationID] = rel
		}
	case *pglogrepl.LogicalDecodingMessage:
		if m.Prefix == heartbeatPrefix {
			s.lastHeartbeat.Store(time.Now().UnixNano())
		}
	}
	return nil
}

// shedPayloads makes room under the in-flight cap, while connections churn, by dropping payloads of queued
// changes (scheduler.shed), down to half the cap. It reports whether that freed enough to read on: once most
// of what is in flight is references, or payloads of orgs with open connections, the stream waits as before.
func (s *session) shedPayloads() bool {
	if !s.c.conns.evicting() {
		// Every org with work keeps its connection: its payloads wait for a visit that costs no backend,
		// and reading them back would only add work.
		return false
	}
	limit := s.c.cfg.MaxInFlightBytes
	freed, n := s.sched.shed(s.inFlight.Load() - limit/2)
	if n == 0 {
		return false
	}
	s.inFlight.Add(-freed)
	s.c.metrics.payloadsShed.Add(float64(n))
	return freed >= limit/16
}

// flush hands the gathered changes to their orgs.
func (s *session) flush() {
	if len(s.gather) == 0 {
		return
	}
	s.sched.enqueue(s.gather)
	s.gather = make([]*change, 0, min(cap(s.gather), s.c.cfg.MaxBatchRows))
	s.gatherBytes = 0
}

// sendStatus reports positions. Flush and apply are the acknowledged position; with nothing in flight, the
// latest keepalive's WAL end is acknowledged too (everything before it was received and is settled), which
// keeps the slot moving while the publication is quiet. All three positions are set: pglogrepl would
// otherwise report the write position as flushed.
func (s *session) sendStatus(now time.Time) error {
	acked, idle, _ := s.tracker.state()
	flush := max(acked, s.reported)
	if idle && s.cur == nil && len(s.gather) == 0 && s.walEnd > flush {
		s.c.cfg.Logger.Debug("acknowledging the keepalive position: nothing in flight", slog.String("acked_lsn", acked.String()), slog.String("wal_end", s.walEnd.String()))
		flush = s.walEnd
	}
	write := max(flush, s.lastCommitEnd)
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write,
		WALFlushPosition: flush,
		WALApplyPosition: flush,
		ClientTime:       now,
	})
	if err != nil {
		return fmt.Errorf("error sending standby status: %w", err)
	}
	s.reported = flush
	s.lastStatus = now
	return nil
}

// work runs jobs until the scheduler closes.
func (s *session) work(ctx context.Context) {
	for {
		j := s.sched.next()
		if j == nil {
			return
		}
		r, err := s.run(ctx, j)
		if err != nil {
			if ctx.Err() == nil {
				select {
				case s.fatal <- err:
				default:
				}
			}
			// Left unsettled: the next session replays them.
			s.sched.close()
			return
		}
		s.sched.done(j, r)
		if len(j.changes) > 0 {
			s.tracker.settle(j.changes)
			s.inFlight.Add(-j.held)
			select {
			case s.space <- struct{}{}:
			default:
			}
		}
	}
}

// run runs one job. An error is fatal to the session (the application database failed).
func (s *session) run(ctx context.Context, j *job) (jobResult, error) {
	c := s.c
	switch j.kind {
	case jobDrain:
		return c.drain(ctx, j.org)
	case jobPark:
		// Queued behind parked changes: the reason is theirs.
		next := time.Now() // due with the org's next drain anyway; the scheduler keeps its own time
		if err := c.park(ctx, j.org.id, j.changes, "queued behind earlier parked changes", next); err != nil {
			return jobResult{}, err
		}
		return jobResult{}, nil
	}
	start := time.Now()
	c.metrics.batchRows.Observe(float64(len(j.changes)))
	c.metrics.batchBytes.Observe(float64(j.bytes))
	applied, err := c.applyChanges(ctx, j.org.id, j.changes)
	var te *transientError
	if errors.As(err, &te) {
		if ctx.Err() != nil {
			return jobResult{}, ctx.Err() // shutting down: not the org's fault, replay instead of parking
		}
		next := time.Now().Add(backoff(c.cfg.RetryMin, c.cfg.RetryMax, 0))
		if err := c.park(ctx, j.org.id, j.changes, te.Error(), next); err != nil {
			return jobResult{}, err
		}
		c.cfg.Logger.WarnContext(ctx, "org database cannot take changes; parked them", slog.Int64("org_id", j.org.id),
			slog.Int("changes", len(j.changes)), slog.String("error", te.Error()))
		return jobResult{parked: true, nextAttempt: next}, nil
	}
	if err != nil {
		return jobResult{}, err
	}
	c.observe(applied, j.changes, start)
	return jobResult{}, nil
}

// wakeLoop makes parked orgs runnable when their next attempt is due.
func (s *session) wakeLoop(ctx context.Context) {
	tick := min(max(s.c.cfg.RetryMin/4, 10*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	idle := time.NewTicker(max(s.c.cfg.OrgConnIdleTimeout/4, time.Second))
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sched.wakeDue()
		case <-idle.C:
			s.c.conns.closeIdle(false)
		}
	}
}

// heartbeatLoop emits a transactional logical message now and every HeartbeatInterval: it comes back
// through the slot as a transaction to acknowledge, so the slot moves while the publication is quiet.
func (s *session) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		if _, err := s.c.pool.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, $2::text)`, heartbeatPrefix, time.Now().UTC().Format(time.RFC3339Nano)); err != nil && ctx.Err() == nil {
			s.c.cfg.Logger.WarnContext(ctx, "error emitting a fanout heartbeat", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lagLoop updates the lag gauges.
func (s *session) lagLoop(ctx context.Context) {
	t := time.NewTicker(s.c.cfg.LagInterval)
	defer t.Stop()
	m := s.c.metrics
	for {
		var lag *int64
		err := s.c.pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`, s.c.cfg.Slot).Scan(&lag)
		if err == nil && lag != nil {
			m.slotLagBytes.Set(float64(*lag))
		}
		_, _, oldest := s.tracker.state()
		if oldest.IsZero() {
			m.slotLagSeconds.Set(0)
		} else {
			m.slotLagSeconds.Set(time.Since(oldest).Seconds())
		}
		m.heartbeatAge.Set(time.Since(time.Unix(0, s.lastHeartbeat.Load())).Seconds())
		m.inFlightBytes.Set(float64(s.inFlight.Load()))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
