// Package cli is webhookdb's command tree: the server commands (serve, fanout, dev, migrate, admin) and the
// client commands that talk to the management API.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

type globalOptions struct {
	logLevel  string
	logFormat string
}

// NewRootCommand builds the whole command tree.
func NewRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "webhookdb",
		Short:         "Webhooks in, typed rows in your own Postgres out",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", envOr("WEBHOOKDB_LOG_LEVEL", "info"), "log level: debug, info, warn, error (WEBHOOKDB_LOG_LEVEL)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", envOr("WEBHOOKDB_LOG_FORMAT", "text"), "log format: text or json (WEBHOOKDB_LOG_FORMAT)")
	root.AddCommand(
		newServeCommand(g),
		newMigrateCommand(g),
		newDevCommand(g),
		newAdminCommand(g),
		newBenchCommand(g),
		newFanoutCommand(g),
		newKeysCommand(g), newVaultCommand(g),
	)
	root.AddCommand(clientCommands()...)
	root.AddCommand(newSignCommand())
	return root
}

func (g *globalOptions) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, errors.New("--log-format: want text or json")
	}
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
