package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
)

// backfillFlags are `integrations update`'s backfill settings.
type backfillFlags struct {
	key, secret, baseURL, every, options string
}

func (f *backfillFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.key, "backfill-key", "", "the vendor's API key or token for backfills (Twilio: the account SID); '-' prompts for it; verified at once")
	c.Flags().StringVar(&f.secret, "backfill-secret", "", "the vendor's secret where it needs one (Twilio: the auth token); '-' prompts for it")
	c.Flags().StringVar(&f.baseURL, "backfill-base-url", "", "another API host than the vendor's (server admins only outside the vendor's own hosts)")
	c.Flags().StringVar(&f.every, "backfill-every", "", "run incremental backfills this often (such as 1h); 0 stops the schedule")
	c.Flags().StringVar(&f.options, "backfill-options", "", `the vendor client's options as JSON: GitHub {"repositories":["owner/name"]}, Shopify {"shop":"NAME","api_version":"2025-01"}, Intercom {"region":"eu"}`)
}

// body is the PUT .../backfill body, nil when no backfill flag was given.
func (f *backfillFlags) body(cmd *cobra.Command) (map[string]any, error) {
	body := map[string]any{}
	for _, x := range []struct{ flag, field, value string }{
		{"backfill-key", "key", f.key}, {"backfill-secret", "secret", f.secret},
		{"backfill-base-url", "base_url", f.baseURL}, {"backfill-every", "every", f.every},
	} {
		if !cmd.Flags().Changed(x.flag) {
			continue
		}
		v := x.value
		if v == "-" && (x.field == "key" || x.field == "secret") {
			var err error
			if v, err = prompt(cmd, x.flag); err != nil {
				return nil, err
			}
		}
		body[x.field] = v
	}
	if cmd.Flags().Changed("backfill-options") {
		var v any
		if err := json.Unmarshal([]byte(f.options), &v); err != nil {
			return nil, fmt.Errorf("--backfill-options is not valid JSON: %w", err)
		}
		body["options"] = v
	}
	if len(body) == 0 {
		return nil, nil
	}
	return body, nil
}

// prompt reads a secret line; on a terminal it asks first (the value is not echoed back by webhookdb).
func prompt(cmd *cobra.Command, what string) (string, error) {
	if isTerminal(os.Stdin) {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: ", what)
	}
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if line = strings.TrimSpace(line); line == "" {
		return "", fmt.Errorf("no %s given", what)
	}
	return line, nil
}

func backfillSettingsOut(p *printer, out *api.BackfillSettings) error {
	return p.record(out, field{"integration", out.Integration}, field{"backfill_supported", out.Supported},
		field{"credentials_set", out.CredentialsSet}, field{"fingerprint", out.Fingerprint}, field{"base_url", out.BaseURL}, field{"options", string(out.Options)},
		field{"every", out.Every}, field{"next_run_at", out.NextRunAt}, field{"high_water", out.HighWater}, field{"verified_at", out.VerifiedAt})
}

func jobFields(j *backfill.Job) []field {
	return []field{{"id", j.ID}, {"integration", j.Integration}, {"kind", j.Kind}, {"state", j.State}, {"pages", j.PagesDone},
		{"objects", j.ItemsDone}, {"since", j.Since}, {"started_at", j.StartedAt}, {"finished_at", j.FinishedAt},
		{"retry_at", j.RunAfter}, {"error_status", j.ErrorStatus}, {"last_error", j.LastError}}
}

func backfillCommand(o *clientOptions) *cobra.Command {
	var full, wait bool
	bf := &cobra.Command{
		Use:   "backfill INTEGRATION",
		Short: "Fill an integration's table from the vendor's API (incremental from the last run, or --full)",
		Long: "Queue a backfill job for the integration: its vendor's API is paged through with the credentials set by\n" +
			"`integrations update ID --backfill-key K`, and every object goes the way webhooks go, into the same table.\n" +
			"With --wait, follow it to the end (a progress line on a terminal).",
		Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.BackfillJobEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/integrations/"+pathEscape(args[0])+"/backfill/jobs", map[string]any{"full": full}, &out); err != nil {
				return err
			}
			if !wait {
				return p.record(&out, jobFields(out.Job)...)
			}
			job, err := followJob(cmd.Context(), c, p, orgPath, out.Job)
			if err != nil {
				return err
			}
			if err := p.record(&api.BackfillJobEnvelope{Job: job}, jobFields(job)...); err != nil {
				return err
			}
			if job.State != backfill.StateSucceeded {
				return fmt.Errorf("backfill job %d %s", job.ID, job.State)
			}
			return nil
		}),
	}
	bf.Flags().BoolVar(&full, "full", false, "list everything, not only what changed since the last finished job")
	bf.Flags().BoolVar(&wait, "wait", false, "wait for the job to finish, showing progress")
	status := &cobra.Command{
		Use: "status [JOB]", Short: "Backfill jobs of the organization, or one job", Args: cobra.MaximumNArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			if len(args) == 1 {
				var out api.BackfillJobEnvelope
				if err := c.do(cmd.Context(), "GET", orgPath+"/backfill/jobs/"+pathEscape(args[0]), nil, &out); err != nil {
					return err
				}
				return p.record(&out, jobFields(out.Job)...)
			}
			var out api.BackfillJobList
			if err := c.do(cmd.Context(), "GET", orgPath+"/backfill/jobs", nil, &out); err != nil {
				return err
			}
			var rows [][]any
			for _, j := range out.Jobs {
				rows = append(rows, []any{j.ID, j.Integration, j.Kind, j.State, j.PagesDone, j.ItemsDone, j.CreatedAt, j.LastError})
			}
			return p.table(&out, []string{"id", "integration", "kind", "state", "pages", "objects", "created_at", "last_error"}, rows)
		}),
	}
	cancel := &cobra.Command{
		Use: "cancel JOB", Short: "Cancel a queued or running backfill job", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.BackfillJobEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/backfill/jobs/"+pathEscape(args[0])+"/cancel", nil, &out); err != nil {
				return err
			}
			return p.record(&out, jobFields(out.Job)...)
		}),
	}
	settings := &cobra.Command{
		Use: "settings INTEGRATION", Short: "An integration's backfill settings (credentials only as set and a fingerprint) and recent jobs", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.BackfillSettings
			if err := c.do(cmd.Context(), "GET", orgPath+"/integrations/"+pathEscape(args[0])+"/backfill", nil, &out); err != nil {
				return err
			}
			return backfillSettingsOut(p, &out)
		}),
	}
	bf.AddCommand(status, cancel, settings)
	return bf
}

// failedBackfills prints, under `errors list`, the backfill jobs that failed with their vendor's reason.
func failedBackfills(p *printer, jobs []*backfill.Job) error {
	if len(jobs) == 0 {
		return nil
	}
	fmt.Fprintln(p.w, "\nbackfill jobs that failed (backfill status JOB; run backfill INTEGRATION again once fixed):")
	var rows [][]any
	for _, j := range jobs {
		rows = append(rows, []any{j.ID, j.Integration, j.FinishedAt, j.ErrorStatus, j.LastError})
	}
	return p.table(nil, []string{"job", "integration", "failed_at", "vendor_status", "error"}, rows)
}

// followJob polls a job until it finishes; on a terminal (table output) it redraws a progress line.
func followJob(ctx context.Context, c *client, p *printer, orgPath string, job *backfill.Job) (*backfill.Job, error) {
	tty := p.format != "json" && isTerminal(os.Stderr)
	spin := []string{"|", "/", "-", "\\"}
	for i := 0; ; i++ {
		if tty {
			fmt.Fprintf(os.Stderr, "\r%s job %d %-9s %8d pages %10d objects ", spin[i%len(spin)], job.ID, job.State, job.PagesDone, job.ItemsDone)
		}
		if !job.Active() {
			if tty {
				fmt.Fprintln(os.Stderr)
				fmt.Fprintf(os.Stderr, "%d objects stored in %d pages; the fanout writes them to the integration's table\n", job.ItemsDone, job.PagesDone)
			}
			return job, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		var out api.BackfillJobEnvelope
		if err := c.do(ctx, "GET", orgPath+"/backfill/jobs/"+url.PathEscape(fmt.Sprint(job.ID)), nil, &out); err != nil {
			return nil, err
		}
		job = out.Job
	}
}
