package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/fanout/fanoutbench"
	"github.com/webhookdb-go/webhookdb/fanout/fanoutcmd"
)

func init() {
	benchSubcommands = append(benchSubcommands, newFanoutBenchCommand)
}

func newFanoutCommand(g *globalOptions) *cobra.Command {
	o := &fanoutcmd.Options{}
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Run the fanout alone: replicate accepted webhooks from staging into the org databases",
		Long: "Runs the fanout as its own process (serve and dev run it too). It consumes the staging publication\n" +
			"through a persistent replication slot and applies typed upserts to each org's database. Run one per\n" +
			"application database: a slot serves one consumer at a time, so a second one waits for the first.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			o.Config.Logger = logger
			err = fanoutcmd.Run(cmd.Context(), o)
			if cmd.Context().Err() != nil {
				return nil // stopped by a signal, possibly while starting: not a failure
			}
			return err
		},
	}
	fanoutcmd.AddFlags(cmd.Flags(), o)
	cmd.AddCommand(fanoutStatusCommand())
	return cmd
}

func newFanoutBenchCommand() *cobra.Command {
	var cfg fanoutbench.Config
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Drain rate of preloaded staging rows into org databases against native logical replication, and steady-state lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			_, err := fanoutbench.Run(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.AdminURL, "admin-url", "", "superuser URL of an existing cluster to use (it creates and drops databases); empty starts a private cluster")
	f.IntVar(&cfg.Rows, "rows", 100_000, "staging rows to preload")
	f.IntVar(&cfg.Orgs, "orgs", 100, "orgs (one database each) the rows are spread over")
	f.IntVar(&cfg.Workers, "workers", 0, "fanout workers (default: the fanout's default)")
	f.IntVar(&cfg.MaxOrgConns, "max-org-connections", 0, "fanout connections to org databases (default: the fanout's default)")
	f.IntVar(&cfg.Rate, "rate", 2_000, "webhooks per second of the steady-state lag phase (0 skips it)")
	f.DurationVar(&cfg.SteadyDuration, "steady-duration", 10*time.Second, "duration of the steady-state lag phase")
	return cmd
}
