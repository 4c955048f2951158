package cli

import (
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/ingest/ingestbench"
)

// benchSubcommands are the benchmarks under `webhookdb bench`; `bench all` runs them in order.
var benchSubcommands []func() *cobra.Command

func newBenchCommand(_ *globalOptions) *cobra.Command {
	var cpuProfile string
	var profileFile *os.File
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks, each printing ratios against a baseline measured in the same run",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if cpuProfile == "" {
				return nil
			}
			f, err := os.Create(cpuProfile)
			if err != nil {
				return err
			}
			profileFile = f
			return pprof.StartCPUProfile(f)
		},
		PersistentPostRun: func(*cobra.Command, []string) {
			if profileFile != nil {
				pprof.StopCPUProfile()
				profileFile.Close()
			}
		},
	}
	bench.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (server and load generator) to this file")
	subs := []*cobra.Command{newIngestBenchCommand()}
	for _, f := range benchSubcommands {
		subs = append(subs, f())
	}
	bench.AddCommand(subs...)
	bench.AddCommand(&cobra.Command{
		Use:   "all",
		Short: "Run every benchmark with its defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, sub := range subs {
				fmt.Fprintf(cmd.OutOrStdout(), "\n== bench %s ==\n", sub.Name())
				sub.SetContext(cmd.Context())
				sub.SetOut(cmd.OutOrStdout())
				if err := sub.RunE(sub, nil); err != nil {
					return fmt.Errorf("bench %s: %w", sub.Name(), err)
				}
			}
			return nil
		},
	})
	return bench
}

func newIngestBenchCommand() *cobra.Command {
	var cfg ingestbench.Config
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Signed Stripe webhooks over HTTP against one-row INSERT transactions, same payload and concurrency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			_, err := ingestbench.Run(cmd.Context(), cfg)
			return err
		},
	}
	cmd.Flags().StringVar(&cfg.DatabaseURL, "database-url", "", "use this empty database instead of starting a private cluster")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", 64, "concurrent keep-alive clients (and baseline connections)")
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 5*time.Second, "duration of each round")
	cmd.Flags().IntVar(&cfg.Rounds, "rounds", 3, "alternating rounds; medians are compared")
	return cmd
}
