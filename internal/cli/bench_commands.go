package cli

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/bench/backfillbench"
	"github.com/webhookdb-go/webhookdb/internal/bench/credbench"
	"github.com/webhookdb-go/webhookdb/internal/bench/fanoutbench"
	"github.com/webhookdb-go/webhookdb/internal/bench/ingestbench"
	"github.com/webhookdb-go/webhookdb/internal/bench/subsbench"
)

// profiler writes --cpuprofile around a benchmark's measured phases (the hooks ingest and fanout call around
// their rounds, drains and steady phase; the whole run of credentials), so setup and cleanup (provisioning
// databases, removing a cluster's files) stay out of it. Under `bench all`, each benchmark gets its own file,
// the path followed by "." and the benchmark's name.
type profiler struct {
	path  string
	multi bool
	f     *os.File
	err   error // the first error starting a profile
}

func (p *profiler) hooks(name string) (start, stop func()) {
	if p.path == "" {
		return nil, nil
	}
	start = func() {
		path := p.path
		if p.multi {
			path += "." + name
		}
		f, err := os.Create(path)
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			if p.err == nil {
				p.err = fmt.Errorf("error starting the CPU profile: %w", err)
			}
			return
		}
		p.f = f
	}
	stop = func() {
		if p.f != nil {
			pprof.StopCPUProfile()
			p.f.Close()
			p.f = nil
		}
	}
	return start, stop
}

func newBenchCommand(_ *globalOptions) *cobra.Command {
	prof := &profiler{}
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks, each printing ratios against a baseline measured in the same run",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if prof.path == "" {
				return nil
			}
			// Fail before the run rather than after it when the file cannot be written.
			f, err := os.Create(prof.path)
			if err != nil {
				return err
			}
			return f.Close()
		},
		PersistentPostRunE: func(*cobra.Command, []string) error { return prof.err },
	}
	bench.PersistentFlags().StringVar(&prof.path, "cpuprofile", "",
		"write a CPU profile of the measured phases (server and load generator; not setup or cleanup) to this file (under `all`: one per benchmark, FILE.NAME)")
	subs := benchSubcommandsWith(prof)
	bench.AddCommand(subs...)
	bench.AddCommand(&cobra.Command{
		Use:   "all",
		Short: "Run every benchmark with its defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prof.multi = true
			if prof.path != "" {
				_ = os.Remove(prof.path) // each benchmark writes its own file
			}
			for _, sub := range subs {
				runs := []benchRun{{cmd: sub}}
				if sub.Name() == "fanout" {
					runs = append(runs, fanoutVariants(prof)...)
				}
				for _, r := range runs {
					title := strings.TrimSpace(r.cmd.Name() + " " + strings.Join(r.args, " "))
					fmt.Fprintf(cmd.OutOrStdout(), "\n== bench %s ==\n", title)
					if err := r.cmd.ParseFlags(r.args); err != nil {
						return fmt.Errorf("bench %s: %w", title, err)
					}
					r.cmd.SetContext(cmd.Context())
					r.cmd.SetOut(cmd.OutOrStdout())
					if err := r.cmd.RunE(r.cmd, nil); err != nil {
						return fmt.Errorf("bench %s: %w", title, err)
					}
				}
			}
			return nil
		},
	})
	return bench
}

// benchRun is one benchmark run of `bench all`: a command and its flags.
type benchRun struct {
	cmd  *cobra.Command
	args []string
}

// fanoutVariants are the fanout's other scenarios that `bench all` runs after its defaults, so one command
// prints every ratio: most of the traffic on a few orgs, and a server of 1,000 orgs (about 5 minutes, most of
// it provisioning the databases).
func fanoutVariants(prof *profiler) []benchRun {
	return []benchRun{
		{cmd: newFanoutBenchCommandNamed(prof, "fanout-hot"), args: []string{"--hot-share", "0.9"}},
		{cmd: newFanoutBenchCommandNamed(prof, "fanout-1000"), args: []string{"--orgs", "1000"}},
	}
}

// benchSubcommands are the benchmarks under `webhookdb bench`, listed here and nowhere else, in the order
// `bench all` (and so `make bench`) runs them.
func benchSubcommands() []*cobra.Command { return benchSubcommandsWith(&profiler{}) }

func benchSubcommandsWith(prof *profiler) []*cobra.Command {
	return []*cobra.Command{
		newIngestBenchCommand(prof),
		newFanoutBenchCommand(prof),
		newCredentialsBenchCommand(prof),
		newBackfillBenchCommand(prof),
		newSubscriptionsBenchCommand(prof), // issue 14
	}
}

func newBackfillBenchCommand(prof *profiler) *cobra.Command {
	var cfg backfillbench.Config
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Objects per second from a fake Stripe into an org's table, and another org's webhook lag while it runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			if start, stop := prof.hooks("backfill"); start != nil {
				start()
				defer stop()
			}
			_, err := backfillbench.Run(cmd.Context(), cfg)
			return err
		},
	}
	cmd.Flags().IntVar(&cfg.Objects, "objects", 100_000, "charges the fake Stripe holds")
	cmd.Flags().IntVar(&cfg.Rate, "rate", 200, "webhooks per second of another org during both phases")
	cmd.Flags().DurationVar(&cfg.Quiet, "quiet", 5*time.Second, "how long the lag is measured without a backfill")
	cmd.Flags().IntVar(&cfg.BackfillRate, "backfill-rate", 0, "objects per second the backfill may store (default: the server's, 2000)")
	cmd.Flags().IntVar(&cfg.Workers, "backfill-workers", 0, "backfill workers (default: the server's, 2)")
	return cmd
}

func newIngestBenchCommand(prof *profiler) *cobra.Command {
	var cfg ingestbench.Config
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Signed Stripe webhooks over HTTP against one-row INSERT transactions, same payload and concurrency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			cfg.StartProfile, cfg.StopProfile = prof.hooks("ingest")
			_, err := ingestbench.Run(cmd.Context(), cfg)
			return err
		},
	}
	cmd.Flags().StringVar(&cfg.DatabaseURL, "database-url", "", "use this empty database instead of starting a private cluster")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", 64, "concurrent keep-alive clients (and baseline connections)")
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 5*time.Second, "duration of each round")
	cmd.Flags().IntVar(&cfg.Rounds, "rounds", 3, "alternating rounds; medians are compared")
	cmd.Flags().StringToStringVar(&cfg.PGSettings, "pg-setting", nil, "postgresql.conf setting of the private cluster, name=value, repeatable (e.g. shared_buffers=1GB)")
	return cmd
}

func newFanoutBenchCommand(prof *profiler) *cobra.Command {
	return newFanoutBenchCommandNamed(prof, "fanout")
}

// newFanoutBenchCommandNamed is the fanout benchmark whose CPU profile, under `bench all`, is named name.
func newFanoutBenchCommandNamed(prof *profiler, name string) *cobra.Command {
	var cfg fanoutbench.Config
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Drain rate of preloaded staging rows into org databases against native logical replication, and steady-state lag from ingest's receipt to org commit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			cfg.StartProfile, cfg.StopProfile = prof.hooks(name)
			_, err := fanoutbench.Run(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.AdminURL, "admin-url", "", "superuser URL of an existing cluster to use (it creates and drops databases); empty starts a private cluster")
	f.StringVar(&cfg.DataDir, "data-dir", "", "data directory of the --admin-url cluster, when it runs on this machine, so each phase reports its Postgres CPU")
	f.IntVar(&cfg.Rows, "rows", 100_000, "staging rows to preload")
	f.IntVar(&cfg.Orgs, "orgs", 100, "orgs (one database each) the rows are spread over")
	f.IntVar(&cfg.Workers, "workers", 0, "fanout workers (default: the fanout's default)")
	f.IntVar(&cfg.MaxOrgConns, "max-org-connections", 0, "fanout connections to the org databases of each server (default: a share of max_connections)")
	f.Int64Var(&cfg.MaxInFlightBytes, "max-in-flight-bytes", 0, "fanout: bytes of staging rows received and not yet applied (default: the fanout's, 64 MiB)")
	f.IntVar(&cfg.Rate, "rate", 2_000, "webhooks per second of the steady-state lag phase (0 skips it)")
	f.DurationVar(&cfg.SteadyDuration, "steady-duration", 10*time.Second, "duration of the steady-state lag phase")
	f.IntVar(&cfg.SteadyClients, "steady-clients", 64, "concurrent keep-alive HTTP clients sending the steady phase's signed deliveries to ingest")
	f.Float64Var(&cfg.HotShare, "hot-share", 0, "share of the traffic (drain and steady phase) sent to the hot orgs, e.g. 0.9 (0: round-robin over all orgs)")
	f.Float64Var(&cfg.HotOrgs, "hot-orgs", 0.1, "share of the orgs that are hot, with --hot-share")
	f.StringToStringVar(&cfg.PGSettings, "pg-setting", nil, "postgresql.conf setting of the private cluster, name=value, repeatable (e.g. autovacuum=off)")
	return cmd
}

func newCredentialsBenchCommand(prof *profiler) *cobra.Command {
	var cfg credbench.Config
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "db connection and db roll-credentials through Vault, against issuing directly (--credentials=postgres)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			if start, stop := prof.hooks("credentials"); start != nil {
				start()
				defer stop()
			}
			_, err := credbench.RunConfig(cmd.Context(), cfg)
			return err
		},
	}
	cmd.Flags().IntVar(&cfg.Connections, "connections", 200, "db connection calls timed per mode")
	cmd.Flags().IntVar(&cfg.Rolls, "rolls", 15, "roll-credentials calls timed per mode")
	return cmd
}

func newSubscriptionsBenchCommand(prof *profiler) *cobra.Command {
	var cfg subsbench.Config
	cmd := &cobra.Command{
		Use:   "subscriptions",
		Short: "Webhook subscription notifications per second and change-to-delivery lag at a steady rate of changes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			cfg.StartProfile, cfg.StopProfile = prof.hooks("subscriptions")
			_, err := subsbench.Run(cmd.Context(), cfg)
			return err
		},
	}
	cmd.Flags().IntVar(&cfg.Rate, "rate", 2_000, "changes per second staged")
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 10*time.Second, "duration of the steady phase")
	cmd.Flags().IntVar(&cfg.Orgs, "orgs", 4, "orgs (one subscription each) the changes are spread over")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", 0, "deliveries sent at once per endpoint (default the server's, 8)")
	cmd.Flags().BoolVar(&cfg.Statements, "statements", false, "load pg_stat_statements and print the statements that took the most time, and the delivery log's index use")
	return cmd
}
