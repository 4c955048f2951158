package cli

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
)

// Webhook subscriptions and alert handlers (issue 14).

func subscriptionFields(s *subscriptions.Subscription) []field {
	return []field{{"id", s.ID}, {"url", s.URL}, {"integration_id", s.Integration}, {"sources", strings.Join(s.Sources, ",")},
		{"pending", s.Pending}, {"failing_since", s.FailingSince}, {"disabled_at", s.DisabledAt}, {"disabled_reason", s.DisabledReason},
		{"created_at", s.CreatedAt}}
}

func subscriptionsCommand(o *clientOptions) *cobra.Command {
	subs := &cobra.Command{Use: "subscriptions", Short: "Webhook subscriptions: your endpoints get the row changes of your tables, signed"}
	var integration, sources, grace, status, since string
	var all bool
	create := &cobra.Command{
		Use: "create URL", Short: "Subscribe an https URL to the row changes of every table (or of --integration's)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			body := map[string]any{"url": args[0], "integration_id": integration}
			if sources != "" {
				body["sources"] = strings.Split(sources, ",")
			}
			var out api.SubscriptionEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/subscriptions", body, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(&out)
			}
			fmt.Fprintf(p.w, "Created subscription %s.\n\nEach message is signed the Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature);\nverify with this secret, shown only once:\n\n     %s\n\nSend a test message: webhookdb subscriptions test %s\n",
				cell(out.Subscription.ID), cell(out.Secret), cell(out.Subscription.ID))
			return nil
		}),
	}
	create.Flags().StringVar(&integration, "integration", "", "only the table of this integration (opaque id)")
	create.Flags().StringVar(&sources, "sources", "", "which rows notify, comma-separated: webhook (default), backfill, replay, resync")
	list := listCommand(o, "list", "List subscriptions", true, "/subscriptions", []string{"id", "url", "integration_id", "sources", "pending", "disabled_at"},
		func(out *api.SubscriptionList) [][]any {
			var rows [][]any
			for _, s := range out.Subscriptions {
				rows = append(rows, []any{s.ID, s.URL, s.Integration, strings.Join(s.Sources, ","), s.Pending, s.DisabledAt})
			}
			return rows
		})
	test := &cobra.Command{
		Use: "test ID", Short: "Send a signed webhookdb.test message now and show the answer", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out subscriptions.TestResult
			if err := c.do(cmd.Context(), "POST", orgPath+"/subscriptions/"+pathEscape(args[0])+"/test", nil, &out); err != nil {
				return err
			}
			return p.record(&out, field{"ok", out.OK}, field{"message_id", out.MessageID}, field{"status", out.Status},
				field{"response", out.Response}, field{"error", out.Error})
		}),
	}
	roll := &cobra.Command{
		Use: "roll-secret ID", Short: "New signing secret; the previous one keeps signing beside it for --grace", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.SubscriptionEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/subscriptions/"+pathEscape(args[0])+"/roll-secret", map[string]any{"grace_period": grace}, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(&out)
			}
			fmt.Fprintf(p.w, "New secret (shown once):\n\n     %s\n\nUntil %s every message carries a signature with each secret.\n", cell(out.Secret), cell(out.Subscription.PreviousSecretExpiresAt))
			return nil
		}),
	}
	roll.Flags().StringVar(&grace, "grace", "24h", "how long the previous secret keeps signing")
	deliveries := &cobra.Command{
		Use: "deliveries ID", Short: "The delivery log: status, attempts, the endpoint's answer, next attempt", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			q := ""
			if status != "" {
				q = "?status=" + url.QueryEscape(status)
			}
			var out api.SubscriptionDeliveryList
			if err := c.do(cmd.Context(), "GET", orgPath+"/subscriptions/"+pathEscape(args[0])+"/deliveries"+q, nil, &out); err != nil {
				return err
			}
			var rows [][]any
			for _, d := range out.Deliveries {
				rows = append(rows, []any{d.ID, d.MessageID, d.EventType, d.RemoteKey, d.Status, d.Attempts, d.ResponseStatus, d.ResponseBody, d.LastError, d.NextAttemptAt})
			}
			return p.table(&out, []string{"id", "message_id", "event_type", "remote_key", "status", "attempts", "response_status", "response", "last_error", "next_attempt_at"}, rows)
		}),
	}
	deliveries.Flags().StringVar(&status, "status", "", "only pending, delivered or failed")
	redeliver := &cobra.Command{
		Use: "redeliver DELIVERY", Short: "Send one delivery again (same message id), now", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			if _, err := strconv.ParseInt(args[0], 10, 64); err != nil {
				return fmt.Errorf("%q is not a delivery id (a number, as deliveries shows it)", args[0])
			}
			var out api.SubscriptionDeliveryEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/deliveries/"+args[0]+"/redeliver", nil, &out); err != nil {
				return err
			}
			return p.record(&out, field{"id", out.Delivery.ID}, field{"message_id", out.Delivery.MessageID}, field{"status", out.Delivery.Status})
		}),
	}
	recoverCmd := &cobra.Command{
		Use: "recover ID (--since T | --all)", Short: "Enable the endpoint again and resend what failed since T (--all: every message since T, or ever)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			body := map[string]any{"all": all}
			switch {
			case since != "":
				s, err := parseWhen(since)
				if err != nil {
					return fmt.Errorf("--since: %w", err)
				}
				body["since"] = s
			case !all:
				return fmt.Errorf("pass --since T (RFC 3339 or a duration ago, e.g. 6h) or --all")
			}
			var out api.Recovered
			if err := c.do(cmd.Context(), "POST", orgPath+"/subscriptions/"+pathEscape(args[0])+"/recover", body, &out); err != nil {
				return err
			}
			return p.record(&out, field{"resent", out.Resent})
		}),
	}
	recoverCmd.Flags().StringVar(&since, "since", "", "resend failed messages created since: RFC 3339 time or a duration ago")
	recoverCmd.Flags().BoolVar(&all, "all", false, "resend every message (delivered ones too), since --since when given")
	del := deleteCommand(o, "delete ID", "Delete a subscription and its delivery log", true, "Deleting subscription ", "/subscriptions/", deletedFields)
	subs.AddCommand(create, list, test, roll, deliveries, redeliver, recoverCmd, del)
	return subs
}

func alertsCommand(o *clientOptions) *cobra.Command {
	al := &cobra.Command{Use: "alerts", Short: "Error handlers: a URL or an email told when changes fail, an endpoint is disabled or credentials cannot be renewed"}
	add := &cobra.Command{
		Use: "add URL|EMAIL", Short: "Register an error handler (a URL's signing secret is shown once)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.AlertHandlerEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/alerts", map[string]any{"target": args[0]}, &out); err != nil {
				return err
			}
			fields := []field{{"id", out.Handler.ID}, {"kind", out.Handler.Kind}, {"target", out.Handler.Target}}
			if out.Secret != "" {
				fields = append(fields, field{"secret (shown once)", out.Secret})
			}
			return p.record(&out, fields...)
		}),
	}
	list := listCommand(o, "list", "List error handlers and recent alerts", true, "/alerts", []string{"id", "kind", "target", "created_at"},
		func(out *api.AlertHandlerList) [][]any {
			var rows [][]any
			for _, h := range out.Handlers {
				rows = append(rows, []any{h.ID, h.Kind, h.Target, h.CreatedAt})
			}
			return rows
		})
	remove := deleteCommand(o, "remove ID|URL|EMAIL", "Remove an error handler", true, "Removing alert handler ", "/alerts/",
		func(r *api.Removed) []field { return []field{{"removed", r.Removed}} })
	al.AddCommand(add, list, remove)
	return al
}
