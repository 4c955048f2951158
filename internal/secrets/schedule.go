package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// rotationLock is the application database's advisory lock (the one-bigint form, apart from orgdb's two-int4
// locks) that one scheduled rotation holds: several servers may run the schedule, one rotates.
const rotationLock int64 = 0x7768646b_726f7421 // "whdkrot!"

// ScheduleConfig configures scheduled key rotation.
type ScheduleConfig struct {
	// Pool is the application database: the encrypted columns and the lock.
	Pool *pgxpool.Pool
	// Box is the configured encryption: a transit box (possibly with a keyring fallback) is rotated; a
	// keyring alone is only watched.
	Box Rotator
	// Keyring, when the box is the local keyring (the server cannot add a version itself): its newest version's
	// age is checked against Period, and a warning raised when it is older.
	Keyring *Keyring
	// Period is how old the current key version may get; 0 disables the schedule.
	Period time.Duration
	// CheckInterval is how often the schedule looks; default min(Period/10, 1h), at least 1s.
	CheckInterval time.Duration
	// OnRotated runs after each rotation this process made (dev saves its transit key backup).
	OnRotated func(ctx context.Context) error
	// Registerer gets webhookdb_encryption_key_age_seconds, webhookdb_encryption_key_version,
	// webhookdb_encryption_key_rotation_overdue and webhookdb_key_rotations_total{result}.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Schedule rotates the transit key when its current version is older than Period, and rewraps every value,
// under an advisory lock; an interrupted rotation (a key rotated, values left under older versions, the
// minimum decryption version not raised) is finished by the next pass, whatever the key's age.
type Schedule struct {
	cfg       ScheduleConfig
	age       prometheus.Gauge
	version   prometheus.Gauge
	overdue   prometheus.Gauge
	rotations *prometheus.CounterVec
}

// NewSchedule returns a schedule; Run runs it.
func NewSchedule(cfg ScheduleConfig) *Schedule {
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = min(cfg.Period/10, time.Hour)
	}
	cfg.CheckInterval = max(cfg.CheckInterval, time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Schedule{
		cfg: cfg,
		age: prometheus.NewGauge(prometheus.GaugeOpts{Name: "webhookdb_encryption_key_age_seconds",
			Help: "Age of the key version that encrypts stored secrets (transit: since Vault made it; keyring: since this deployment first saw it)."}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{Name: "webhookdb_encryption_key_version",
			Help: "The key version that encrypts stored secrets."}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "webhookdb_encryption_key_rotation_overdue",
			Help: "1 when the current key version is older than --key-rotation-period and was not rotated (a keyring needs an operator: keys generate, restart, keys rotate)."}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webhookdb_key_rotations_total",
			Help: "Scheduled key rotations and resumed rewraps made by this process, by result."}, []string{"result"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.age, s.version, s.overdue, s.rotations)
	}
	return s
}

// PassResult says what one pass did.
type PassResult struct {
	// Locked: another process held the rotation lock; nothing was done.
	Locked bool
	// Rotated: the key got a new version. Resumed: values were rewrapped to finish an earlier rotation.
	Rotated, Resumed bool
	Report           *RotateReport
	// Version and Age are the current key version's after the pass.
	Version int
	Age     time.Duration
}

// Pass checks once: keyring age, or transit rotation under the lock.
func (s *Schedule) Pass(ctx context.Context) (PassResult, error) {
	if tr := transitOf(s.cfg.Box); tr != nil {
		return s.transitPass(ctx, tr)
	}
	if s.cfg.Keyring != nil {
		return s.keyringPass(ctx)
	}
	return PassResult{}, nil
}

func transitOf(b Rotator) *Transit {
	switch x := b.(type) {
	case *Transit:
		return x
	case *Fallback:
		t, _ := x.Primary.(*Transit)
		return t
	}
	return nil
}

func (s *Schedule) transitPass(ctx context.Context, tr *Transit) (res PassResult, err error) {
	conn, err := s.cfg.Pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("error acquiring a connection for the key rotation lock: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, rotationLock).Scan(&got); err != nil {
		return res, fmt.Errorf("error taking the key rotation lock: %w", err)
	}
	if !got {
		res.Locked = true
		return res, nil
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, rotationLock); uerr != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) // a session lock must not outlive the pass
		}
	}()
	// Read under the lock: another server may have just rotated.
	info, err := tr.Info(ctx)
	if err != nil {
		return res, err
	}
	due := time.Since(info.LatestCreated) >= s.cfg.Period
	switch {
	case info.MinDecryption < info.Latest:
		// A rotation that did not finish (a crash mid-rewrap, a failed pass): rewrap to the latest version and
		// raise the minimum only once no value is left under an older one (Rotate checks).
		res.Resumed = true
		s.cfg.Logger.InfoContext(ctx, "finishing an interrupted key rotation", slog.Int("version", info.Latest), slog.Int("min_decryption_version", info.MinDecryption))
		res.Report, err = Rotate(ctx, s.cfg.Pool, s.cfg.Box, RotateOptions{})
	case due:
		res.Rotated = true
		s.cfg.Logger.InfoContext(ctx, "rotating the encryption key", slog.Int("version", info.Latest), slog.Duration("age", time.Since(info.LatestCreated)))
		res.Report, err = Rotate(ctx, s.cfg.Pool, s.cfg.Box, RotateOptions{RotateKey: true})
	}
	if res.Rotated || res.Resumed {
		result := "ok"
		if err != nil {
			result = "error"
		}
		s.rotations.WithLabelValues(result).Inc()
		if res.Rotated && s.cfg.OnRotated != nil {
			// Even when the rewrap failed: the new version exists and encrypts.
			if herr := s.cfg.OnRotated(ctx); herr != nil {
				err = errors.Join(err, herr)
			}
		}
		if err != nil {
			return res, fmt.Errorf("scheduled key rotation: %w", err)
		}
		if info, err = tr.Info(ctx); err != nil {
			return res, err
		}
		s.cfg.Logger.InfoContext(ctx, "key rotation done", slog.Int("version", info.Latest), slog.Int("min_decryption_version", info.MinDecryption))
	}
	res.Version, res.Age = info.Latest, time.Since(info.LatestCreated)
	s.version.Set(float64(res.Version))
	s.age.Set(res.Age.Seconds())
	s.overdue.Set(0)
	return res, nil
}

func (s *Schedule) keyringPass(ctx context.Context) (PassResult, error) {
	var res PassResult
	cur := s.cfg.Keyring.Current()
	var firstSeen time.Time
	err := s.cfg.Pool.QueryRow(ctx, `
		WITH ins AS (INSERT INTO keyring_versions (version) VALUES ($1) ON CONFLICT (version) DO NOTHING RETURNING first_seen_at)
		SELECT first_seen_at FROM ins UNION ALL SELECT first_seen_at FROM keyring_versions WHERE version = $1`, cur).Scan(&firstSeen)
	if err != nil {
		return res, fmt.Errorf("error recording keyring version %d: %w", cur, err)
	}
	res.Version, res.Age = cur, time.Since(firstSeen)
	s.version.Set(float64(cur))
	s.age.Set(res.Age.Seconds())
	if res.Age >= s.cfg.Period {
		s.overdue.Set(1)
		s.cfg.Logger.WarnContext(ctx, "the keyring's newest key is older than the key rotation period: add a version (webhookdb keys generate), restart the servers with it, then run webhookdb keys rotate",
			slog.Int("version", cur), slog.Duration("age", res.Age.Round(time.Second)), slog.Duration("period", s.cfg.Period))
	} else {
		s.overdue.Set(0)
	}
	return res, nil
}

// Run makes a pass every CheckInterval until ctx ends (a maintenance worker). Failures are logged and tried
// again at the next check.
func (s *Schedule) Run(ctx context.Context) error {
	if s.cfg.Period <= 0 {
		return nil
	}
	t := time.NewTicker(s.cfg.CheckInterval)
	defer t.Stop()
	for {
		if _, err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.ErrorContext(ctx, "scheduled key rotation failed; trying again later", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
