// Command fanoutchild runs the fanout as `webhookdb fanout` does, for the tests that kill it or measure its
// memory: it depends on the fanout alone, so those tests do not break while unrelated packages are mid-change.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/webhookdb-go/webhookdb/fanout/fanoutcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := &fanoutcmd.Options{}
	fs := pflag.NewFlagSet("fanoutchild", pflag.ExitOnError)
	fanoutcmd.AddFlags(fs, o)
	level := fs.String("log-level", "warn", "debug, info, warn, error")
	_ = fs.Parse(os.Args[1:])
	var l slog.Level
	if err := l.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	o.Config.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	if err := fanoutcmd.Run(ctx, o); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
