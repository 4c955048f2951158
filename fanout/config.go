package fanout

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// Config tunes a Consumer. Zero values take the defaults of WithDefaults.
type Config struct {
	// Slot is the persistent replication slot, created when missing; default staging.DefaultSlot (partition
	// upkeep reads its progress, so the two must agree).
	Slot string
	// Publication is the publication to consume; default staging.Publication.
	Publication string

	// Workers bounds org applies (and parks and drains) running at once; default 8.
	Workers int
	// MaxBatchRows and MaxBatchBytes bound the rows gathered from the stream before they are handed to the
	// orgs; BatchDelay bounds how long the first of them waits. Defaults 5,000 rows, 8 MiB, 5 ms.
	MaxBatchRows  int
	MaxBatchBytes int
	BatchDelay    time.Duration
	// MaxApplyRows and MaxApplyBytes bound the staging rows of one org transaction; defaults 1,000 and 1 MiB.
	MaxApplyRows  int
	MaxApplyBytes int
	// MaxInFlightBytes caps the bytes of staging rows received and not yet applied, parked or failed; at the
	// cap the stream is not read. Default 64 MiB.
	MaxInFlightBytes int64
	// ApplyTimeout is how long one org transaction (connecting included) may take before its rows are parked;
	// default 10s.
	ApplyTimeout time.Duration

	// StatusInterval is the longest time between standby status updates; default 2s (wal_sender_timeout
	// defaults to 60s).
	StatusInterval time.Duration
	// HeartbeatInterval is how often a heartbeat message is emitted into the WAL; default 15s.
	HeartbeatInterval time.Duration
	// LagInterval is how often slot lag is measured for the metrics; default 5s.
	LagInterval time.Duration

	// MaxOrgConns, when set, caps the connections to the org databases of each database server (at least
	// Workers). Unset, each server's cap is ServerConnPercent of what its max_connections leaves beside
	// superuser_reserved_connections, read from the server on the first connection: a connection serves one
	// database, so the cap is how many of a server's orgs keep theirs open between transactions.
	MaxOrgConns int
	// ServerConnPercent is the share of each server's connections the fanout may hold when MaxOrgConns is
	// unset; default 50. Read-only logins leave the same share free (see internal/app).
	ServerConnPercent int
	// OrgConnIdleTimeout closes org connections idle that long; default 1 minute.
	OrgConnIdleTimeout time.Duration

	// RetryMin and RetryMax bound the backoff between attempts to drain an org's parked changes; defaults
	// 1s and 5 minutes.
	RetryMin time.Duration
	RetryMax time.Duration
	// DrainBatchRows bounds the parked changes applied in one transaction; default 1,000.
	DrainBatchRows int
	// ParkedMaxAge and ParkedMaxAttempts bound how long a change stays parked: past either, a failed drain moves
	// it to fanout.failed_changes with its own copy of the payload, where it no longer holds its staging
	// partition (so retention goes on for everyone) and waits for the org's `errors retry` or `errors skip`.
	// Nothing is lost either way. Defaults 7 days (the default staging retention: a change parked about when
	// it arrived holds its partition no longer than retention keeps it anyway, while outages shorter than a
	// week drain by themselves, in order) and 2,016 attempts (a week of drains at the 5-minute RetryMax).
	ParkedMaxAge      time.Duration
	ParkedMaxAttempts int

	// CacheTTL is how long org and integration lookups are trusted; default 30s.
	CacheTTL time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between replication sessions after an error; defaults
	// 500ms and 30s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// Writers, when set, gives the fanout its own narrow login per org database; without it the fanout connects
	// with the server's admin URL (and still writes only through the org's owner role).
	Writers WriterSource

	// Notify, when set, receives the row writes of orgs with webhook subscriptions (issue 14, notify.go);
	// RunRelay hands them over.
	Notify Notifier

	Logger *slog.Logger
	// OnApplied, when set, is called after each committed org transaction of the live stream (benchmarks and
	// tests measure lag with it). It runs on a worker: keep it fast.
	OnApplied func(Applied)
}

// Applied describes one committed org transaction.
type Applied struct {
	OrgID int64
	// CommitTimes are the staging commit times of the applied rows, one per row.
	CommitTimes []time.Time
	// ReceivedAts are the rows' received_at (when ingest received each webhook), in the order of CommitTimes.
	ReceivedAts []time.Time
	At          time.Time
}

// DefaultServerConnPercent is ServerConnPercent's default.
const DefaultServerConnPercent = 50

// ServerConnCap is the fanout's connection cap on a server whose max_connections minus
// superuser_reserved_connections is available, holding percent of it.
func ServerConnCap(available, percent int) int { return available * percent / 100 }

// WithDefaults returns a copy of the config with defaults filled in.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	if c.Slot == "" {
		c.Slot = staging.DefaultSlot
	}
	if c.Publication == "" {
		c.Publication = staging.Publication
	}
	defInt(&c.Workers, 8)
	defInt(&c.MaxBatchRows, 5_000)
	defInt(&c.MaxBatchBytes, 8<<20)
	def(&c.BatchDelay, 5*time.Millisecond)
	defInt(&c.MaxApplyRows, 1_000)
	defInt(&c.MaxApplyBytes, 1<<20)
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = 64 << 20
	}
	def(&c.ApplyTimeout, 10*time.Second)
	def(&c.StatusInterval, 2*time.Second)
	def(&c.HeartbeatInterval, 15*time.Second)
	def(&c.LagInterval, 5*time.Second)
	defInt(&c.ServerConnPercent, DefaultServerConnPercent)
	def(&c.OrgConnIdleTimeout, time.Minute)
	def(&c.RetryMin, time.Second)
	def(&c.RetryMax, 5*time.Minute)
	defInt(&c.DrainBatchRows, 1_000)
	def(&c.ParkedMaxAge, 7*24*time.Hour)
	defInt(&c.ParkedMaxAttempts, 2_016)
	def(&c.CacheTTL, 30*time.Second)
	def(&c.ReconnectMin, 500*time.Millisecond)
	def(&c.ReconnectMax, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// replicationName is what slot and publication names may look like: they are spliced into replication
// commands, which take no parameters.
var replicationName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c Config) validate() error {
	var errs []error
	if !replicationName.MatchString(c.Slot) {
		errs = append(errs, fmt.Errorf("slot %q: use lower-case letters, digits and underscores", c.Slot))
	}
	if !replicationName.MatchString(c.Publication) {
		errs = append(errs, fmt.Errorf("publication %q: use lower-case letters, digits and underscores", c.Publication))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"workers", int64(c.Workers)}, {"max batch rows", int64(c.MaxBatchRows)}, {"max batch bytes", int64(c.MaxBatchBytes)},
		{"batch delay", int64(c.BatchDelay)}, {"max apply rows", int64(c.MaxApplyRows)}, {"max apply bytes", int64(c.MaxApplyBytes)},
		{"max in-flight bytes", c.MaxInFlightBytes}, {"apply timeout", int64(c.ApplyTimeout)}, {"status interval", int64(c.StatusInterval)},
		{"heartbeat interval", int64(c.HeartbeatInterval)}, {"lag interval", int64(c.LagInterval)}, {"server connection percent", int64(c.ServerConnPercent)},
		{"org connection idle timeout", int64(c.OrgConnIdleTimeout)}, {"retry min", int64(c.RetryMin)},
		{"drain batch rows", int64(c.DrainBatchRows)}, {"parked max age", int64(c.ParkedMaxAge)}, {"parked max attempts", int64(c.ParkedMaxAttempts)}, {"cache ttl", int64(c.CacheTTL)}, {"reconnect min", int64(c.ReconnectMin)},
	} {
		if f.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", f.name))
		}
	}
	// Each org has at most one transaction in flight, so Workers connections always suffice; fewer would
	// leave workers waiting on each other.
	if c.MaxOrgConns != 0 && c.MaxOrgConns < c.Workers {
		errs = append(errs, fmt.Errorf("max org connections (%d) must be at least workers (%d)", c.MaxOrgConns, c.Workers))
	}
	if c.ServerConnPercent > 90 {
		errs = append(errs, fmt.Errorf("server connection percent (%d) leaves too little for anything else: at most 90", c.ServerConnPercent))
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("retry max must be at least retry min"))
	}
	if c.ReconnectMax < c.ReconnectMin {
		errs = append(errs, errors.New("reconnect max must be at least reconnect min"))
	}
	return errors.Join(errs...)
}
