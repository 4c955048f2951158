package fanout

import (
	"math/rand/v2"
	"sync"
	"time"
)

type jobKind int

const (
	// jobApply writes an org's queued changes into its database.
	jobApply jobKind = iota
	// jobPark parks an org's queued changes behind the ones already parked.
	jobPark
	// jobDrain applies the oldest parked changes of an org.
	jobDrain
)

// orgState is the scheduler's view of one org. Jobs of an org run one at a time, in queue order, which is
// what keeps each org's changes in stream order whichever path (apply, park, drain) they take.
type orgState struct {
	id         int64
	queue      []*change
	queueBytes int64
	// payloadBytes: headers and bodies the queue holds (not shed)
	payloadBytes int64
	busy         bool // a job of this org is running
	inReady      bool // in the ready queue
	readySince   time.Time
	// parked: the org has changes in fanout.parked_changes, so new ones must queue behind them
	parked      bool
	attempts    int // failed drain attempts in a row
	nextAttempt time.Time
	lastParked  bool // the last job parked the queue: a due drain goes next, so a busy org's drains do not starve
}

type job struct {
	kind    jobKind
	org     *orgState
	changes []*change
	bytes   int64 // the changes' size as received
	held    int64 // what they count against the in-flight cap
}

// jobResult is what a job tells the scheduler about its org.
type jobResult struct {
	parked  bool // apply failed and its changes were parked: the org is parked from now on
	drained bool // a drain found nothing left: the org is live again
	more    bool // a drain applied a full batch: there may be more
	failed  bool // a drain could not apply: back off
	// nextAttempt is when a parked org is tried next (as written to fanout.parked_changes)
	nextAttempt time.Time
}

// scheduler hands org jobs to workers: an org is in the ready queue while it has work and no running job.
// Opening a connection costs more than applying a small batch (a backend, SCRAM, a cold catalog cache), so
// with more busy orgs than connections a worker prefers a ready org whose connection is open (see pick);
// the orgs that wait meanwhile gather bigger batches.
type scheduler struct {
	cfg Config
	// hasConn reports whether an org has an idle connection (nil: no preference)
	hasConn func(orgID int64) bool
	mu      sync.Mutex
	cond    *sync.Cond
	orgs    map[int64]*orgState
	// ready is a FIFO of runnable orgs; ready[readyHead:] is live
	ready     []*orgState
	readyHead int
	closed    bool
}

// affinityMaxWait bounds how long connection affinity may pass over the oldest ready org, and affinityScan
// how far down the ready queue a worker looks.
const (
	affinityMaxWait = time.Second
	affinityScan    = 128
)

func newScheduler(cfg Config, hasConn func(int64) bool) *scheduler {
	s := &scheduler{cfg: cfg, hasConn: hasConn, orgs: map[int64]*orgState{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// loadParked marks orgs that have parked changes from earlier sessions.
func (s *scheduler) loadParked(orgs map[int64]parkedOrg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, p := range orgs {
		o := s.org(id)
		o.parked = true
		o.attempts = p.attempts
		o.nextAttempt = p.nextAttempt
	}
}

func (s *scheduler) org(id int64) *orgState {
	o := s.orgs[id]
	if o == nil {
		o = &orgState{id: id}
		s.orgs[id] = o
	}
	return o
}

// enqueue appends changes (in stream order) to their orgs' queues.
func (s *scheduler) enqueue(changes []*change) {
	s.mu.Lock()
	var last *orgState
	for _, c := range changes {
		o := last
		if o == nil || o.id != c.orgID {
			o = s.org(c.orgID)
			last = o
		}
		o.queue = append(o.queue, c)
		o.queueBytes += c.size
		o.payloadBytes += c.payloadBytes()
		s.schedule(o, time.Time{})
	}
	s.mu.Unlock()
	s.cond.Broadcast()
}

// runnable: no job running, and queued changes, or parked changes due for a drain. A parked org with a queue
// runs at once: parking is how its queue makes room.
func (o *orgState) runnable(now time.Time) bool {
	if o.busy {
		return false
	}
	if len(o.queue) > 0 {
		return true
	}
	return o.parked && !now.IsZero() && !now.Before(o.nextAttempt)
}

func (s *scheduler) schedule(o *orgState, now time.Time) {
	if !o.inReady && o.runnable(now) {
		o.inReady = true
		o.readySince = time.Now()
		s.ready = append(s.ready, o)
	}
}

// pick removes and returns the org a worker should serve next: the oldest ready org if it has waited
// affinityMaxWait, else the first (within affinityScan) that needs no new connection, else the first whose
// queue fills a whole transaction (worth a connection), else the oldest.
func (s *scheduler) pick() *orgState {
	i := s.readyHead
	if s.hasConn != nil && time.Since(s.ready[i].readySince) < affinityMaxWait {
		full := -1
		for j := i; j < len(s.ready) && j < i+affinityScan; j++ {
			o := s.ready[j]
			if (o.parked && len(o.queue) > 0) || s.hasConn(o.id) {
				full = j
				break
			}
			if full < 0 && (len(o.queue) >= s.cfg.MaxApplyRows || o.queueBytes >= int64(s.cfg.MaxApplyBytes)) {
				full = j
			}
		}
		if full >= 0 {
			i = full
		}
	}
	o := s.ready[i]
	// close the gap: shift the skipped entries one place towards the tail
	copy(s.ready[s.readyHead+1:i+1], s.ready[s.readyHead:i])
	s.ready[s.readyHead] = nil
	s.readyHead++
	if s.readyHead == len(s.ready) {
		s.ready, s.readyHead = s.ready[:0], 0
	}
	o.inReady = false
	return o
}

// next blocks until a job is available or the scheduler is closed (nil).
func (s *scheduler) next() *job {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for !s.closed && s.readyHead == len(s.ready) {
			s.cond.Wait()
		}
		if s.closed {
			return nil
		}
		o := s.pick()
		if j := s.take(o, time.Now()); j != nil {
			o.busy = true
			return j
		}
	}
}

func (s *scheduler) take(o *orgState, now time.Time) *job {
	drainDue := o.parked && !now.Before(o.nextAttempt)
	switch {
	case o.parked && len(o.queue) > 0 && !(drainDue && o.lastParked):
		// Parking is a small insert of references: take a stream batch at a time.
		o.lastParked = true
		return s.takeQueue(o, jobPark, s.cfg.MaxBatchRows, s.cfg.MaxBatchBytes)
	case drainDue:
		// Parked changes are all older than the queue, so draining first keeps the order.
		o.lastParked = false
		return &job{kind: jobDrain, org: o}
	case !o.parked && len(o.queue) > 0:
		return s.takeQueue(o, jobApply, s.cfg.MaxApplyRows, s.cfg.MaxApplyBytes)
	}
	return nil
}

func (s *scheduler) takeQueue(o *orgState, kind jobKind, maxRows, maxBytes int) *job {
	n := 0
	var bytes int64
	for n < len(o.queue) && n < maxRows && (n == 0 || bytes+o.queue[n].size <= int64(maxBytes)) {
		bytes += o.queue[n].size
		n++
	}
	j := &job{kind: kind, org: o, changes: make([]*change, n), bytes: bytes}
	copy(j.changes, o.queue)
	for _, c := range j.changes {
		j.held += c.held
		o.payloadBytes -= c.payloadBytes()
	}
	// clear the taken prefix so the queue's array does not keep settled changes alive
	clear(o.queue[:n])
	o.queue = o.queue[n:]
	if len(o.queue) == 0 {
		o.queue = nil
	}
	o.queueBytes -= bytes
	return j
}

// shed drops the payloads of queued changes until want bytes are freed, and returns the bytes freed and
// the changes shed. It takes the youngest ready orgs first (the last a worker will reach) and passes over orgs
// with an idle connection (cheap to visit soon) and parked ones (their queue is parked as references anyway).
//
// It is what lets a backlog spread over many orgs drain in few visits. Holding payloads, the in-flight cap
// covers about 40 rows an org at 1,000 orgs, and each of those orgs would get a new backend for every such
// batch: about 10 ms of a database server's CPU a visit, against a few µs a row to read a payload back from
// staging when the org's turn comes. Staging keeps the row until the slot has confirmed past it.
func (s *scheduler) shed(want int64) (freed int64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.ready) - 1; i >= s.readyHead && freed < want; i-- {
		o := s.ready[i]
		if o.payloadBytes == 0 || o.parked || (s.hasConn != nil && s.hasConn(o.id)) {
			continue
		}
		for _, c := range o.queue {
			if f := c.dropPayload(); f > 0 {
				freed += f
				n++
			}
		}
		o.payloadBytes = 0
	}
	return freed, n
}

// done records a job's outcome and reschedules its org.
func (s *scheduler) done(j *job, r jobResult) {
	s.mu.Lock()
	o := j.org
	o.busy = false
	now := time.Now()
	switch {
	case r.parked:
		o.parked = true
		o.attempts = 0
		o.nextAttempt = r.nextAttempt
	case r.drained:
		o.parked = false
		o.attempts = 0
	case r.more:
		o.attempts = 0
		o.nextAttempt = now
	case r.failed:
		o.attempts++
		o.nextAttempt = r.nextAttempt
	}
	s.schedule(o, now)
	if !o.busy && !o.inReady && !o.parked && len(o.queue) == 0 {
		delete(s.orgs, o.id) // nothing to remember: a thousand quiet orgs cost nothing
	}
	s.mu.Unlock()
	s.cond.Signal()
}

// backoff is RetryMin doubled per failed attempt, capped at RetryMax, with ±20% jitter so orgs parked by one
// outage do not retry in lockstep.
func backoff(minD, maxD time.Duration, attempts int) time.Duration {
	d := minD
	for i := 0; i < attempts && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// wakeDue puts parked orgs whose next attempt is due into the ready queue.
func (s *scheduler) wakeDue() {
	s.mu.Lock()
	now := time.Now()
	woke := false
	for _, o := range s.orgs {
		if o.parked && !o.inReady && o.runnable(now) {
			s.schedule(o, now)
			woke = true
		}
	}
	s.mu.Unlock()
	if woke {
		s.cond.Broadcast()
	}
}

// close wakes the workers and makes next return nil.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cond.Broadcast()
}
