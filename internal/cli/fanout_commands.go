package cli

import (
	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/fanout/fanoutcmd"
)

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
	return cmd
}
