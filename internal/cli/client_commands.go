package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/api"
)

// clientCommands builds the commands that talk to the management API.
func clientCommands() []*cobra.Command {
	o := &clientOptions{}
	cmds := []*cobra.Command{
		authCommand(o), orgCommand(o), tokensCommand(o), servicesCommand(o), integrationsCommand(o),
		dbCommand(o), webhooksCommand(o), replayCommand(o), errorsCommand(o), serversCommand(o),
		savedQueryCommand(o),
		backfillCommand(o),
		subscriptionsCommand(o), alertsCommand(o), // issue 14 (subscription_commands.go)
	}
	for _, c := range cmds {
		addClientFlags(c, o)
	}
	return cmds
}

func addClientFlags(c *cobra.Command, o *clientOptions) {
	c.PersistentFlags().StringVar(&o.org, "org", "", "organization key (default: the one chosen with `org use`, or WEBHOOKDB_ORG)")
	c.PersistentFlags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	c.PersistentFlags().BoolVarP(&o.yes, "yes", "y", false, "do not ask before destructive actions")
}

// run wraps a client command: it gets the client, the printer and (when needsOrg) the org's API path.
func run(o *clientOptions, needsOrg bool, f func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		p, err := o.printer(cmd)
		if err != nil {
			return err
		}
		c, cfg, err := o.client()
		if err != nil {
			return err
		}
		var orgPath string
		if needsOrg {
			key, err := o.orgKey(cfg)
			if err != nil {
				return err
			}
			orgPath = "/v1/orgs/" + pathEscape(key)
		}
		return f(cmd, args, c, p, orgPath)
	}
}

// listCommand is a command that GETs a list (answer T) and prints it as a table of columns (or the API's JSON).
func listCommand[T any](o *clientOptions, use, short string, inOrg bool, path string, columns []string, rows func(*T) [][]any) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: run(o, inOrg, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			var out T
			if err := c.do(cmd.Context(), "GET", orgPath+path, nil, &out); err != nil {
				return err
			}
			return p.table(&out, columns, rows(&out))
		}),
	}
}

// deleteCommand is a destructive command on one named thing: it confirms (what + the name), DELETEs
// path + name, and prints the answer (T) as fields says.
func deleteCommand[T any](o *clientOptions, use, short string, inOrg bool, what, path string, fields func(*T) []field) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: run(o, inOrg, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			if err := o.confirm(cmd, what+args[0], args[0]); err != nil {
				return err
			}
			var out T
			if err := c.do(cmd.Context(), "DELETE", orgPath+path+pathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return p.record(&out, fields(&out)...)
		}),
	}
}

// deletedFields prints an api.Deleted; the note only when the API sent one.
func deletedFields(d *api.Deleted) []field {
	fields := []field{{"deleted", d.Deleted}}
	if d.Note != "" {
		fields = append(fields, field{"note", d.Note})
	}
	return fields
}

func authCommand(o *clientOptions) *cobra.Command {
	auth := &cobra.Command{Use: "auth", Short: "Log in to a webhookdb server"}
	var apiURL, token string
	login := &cobra.Command{
		Use:   "login",
		Short: "Check and save the API URL and token (config.json, mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if apiURL == "" || token == "" {
				return errors.New("--url and --token are required (or WEBHOOKDB_API_URL and WEBHOOKDB_TOKEN)")
			}
			c := &client{baseURL: strings.TrimRight(apiURL, "/"), token: token, http: &http.Client{Timeout: time.Minute}}
			var me api.Me
			if err := c.do(cmd.Context(), "GET", "/v1/me", nil, &me); err != nil {
				return err
			}
			cfg, err := loadClientConfig()
			if err != nil {
				return err
			}
			cfg.APIURL, cfg.Token = c.baseURL, token
			if err := cfg.save(); err != nil {
				return err
			}
			var email string
			if me.User != nil {
				email = me.User.Email
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s as %s.\n", c.baseURL, cell(email))
			return nil
		},
	}
	login.Flags().StringVar(&apiURL, "url", envOr("WEBHOOKDB_API_URL", ""), "API URL (WEBHOOKDB_API_URL)")
	login.Flags().StringVar(&token, "token", envOr("WEBHOOKDB_TOKEN", ""), "API token (WEBHOOKDB_TOKEN)")
	whoami := &cobra.Command{
		Use: "whoami", Short: "Show the logged-in user and their organizations", Args: cobra.NoArgs,
		RunE: run(o, false, func(cmd *cobra.Command, _ []string, c *client, p *printer, _ string) error {
			var me api.Me
			if err := c.do(cmd.Context(), "GET", "/v1/me", nil, &me); err != nil {
				return err
			}
			var email, serverAdmin any
			if me.User != nil {
				email, serverAdmin = me.User.Email, me.User.ServerAdmin
			}
			var keys []string
			for _, org := range me.Orgs {
				if org != nil {
					keys = append(keys, fmt.Sprintf("%s (%s)", cell(org.Key), cell(org.Role)))
				}
			}
			return p.record(&me, field{"email", email}, field{"server_admin", serverAdmin}, field{"orgs", strings.Join(keys, ", ")})
		}),
	}
	logout := &cobra.Command{
		Use: "logout", Short: "Forget the saved token", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadClientConfig()
			if err != nil {
				return err
			}
			cfg.Token = ""
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Logged out (the token itself stays valid until revoked: `webhookdb tokens revoke`).")
			return nil
		},
	}
	auth.AddCommand(login, whoami, logout)
	return auth
}

// orgFields prints an org; an answer without one prints dashes.
func orgFields(org *api.Org) []field {
	if org == nil {
		org = &api.Org{}
	}
	return []field{
		{"key", org.Key}, {"name", org.Name}, {"role", org.Role}, {"database", org.Database},
		{"provision_state", org.ProvisionState}, {"created_at", org.CreatedAt},
	}
}

func memberFields(m *api.Member) []field { return []field{{"email", m.Email}, {"role", m.Role}} }

func orgCommand(o *clientOptions) *cobra.Command {
	org := &cobra.Command{Use: "org", Short: "Organizations and their members"}
	var name, role string
	create := &cobra.Command{
		Use: "create KEY", Short: "Create an organization (and its database)", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(cmd *cobra.Command, args []string, c *client, p *printer, _ string) error {
			var out api.OrgEnvelope
			if err := c.do(cmd.Context(), "POST", "/v1/orgs", map[string]any{"key": args[0], "name": name}, &out); err != nil {
				return err
			}
			if p.format == "table" {
				fmt.Fprintf(p.w, "Created organization %s. Make it the default with: webhookdb org use %s\n", args[0], args[0])
				return nil
			}
			return p.json(&out)
		}),
	}
	create.Flags().StringVar(&name, "name", "", "display name (default: the key)")
	list := listCommand(o, "list", "List your organizations", false, "/v1/orgs",
		[]string{"key", "name", "role", "database", "provision_state"},
		func(l *api.OrgList) (rows [][]any) {
			for _, org := range l.Orgs {
				if org != nil {
					rows = append(rows, []any{org.Key, org.Name, org.Role, org.Database, org.ProvisionState})
				}
			}
			return rows
		})
	use := &cobra.Command{
		Use: "use KEY", Short: "Make KEY the default organization of later commands", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(cmd *cobra.Command, args []string, c *client, _ *printer, _ string) error {
			if err := c.do(cmd.Context(), "GET", "/v1/orgs/"+pathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			cfg, err := loadClientConfig()
			if err != nil {
				return err
			}
			cfg.Org = args[0]
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Using organization %s.\n", args[0])
			return nil
		}),
	}
	info := &cobra.Command{
		Use: "info", Short: "Show the organization", Args: cobra.NoArgs,
		RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			var out api.OrgEnvelope
			if err := c.do(cmd.Context(), "GET", orgPath, nil, &out); err != nil {
				return err
			}
			return p.record(&out, orgFields(out.Org)...)
		}),
	}
	members := listCommand(o, "members", "List members", true, "/members", []string{"email", "role", "added_at"},
		func(l *api.MemberList) (rows [][]any) {
			for _, m := range l.Members {
				rows = append(rows, []any{m.Email, m.Role, m.AddedAt})
			}
			return rows
		})
	addMember := &cobra.Command{
		Use: "add-member EMAIL", Short: "Add a member (--role admin|member)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.MemberEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/members", map[string]any{"email": args[0], "role": role}, &out); err != nil {
				return err
			}
			return p.record(&out, memberFields(&out.Member)...)
		}),
	}
	addMember.Flags().StringVar(&role, "role", "member", "admin or member")
	removeMember := deleteCommand(o, "remove-member EMAIL", "Remove a member (or yourself: leave)", true, "Removing ", "/members/",
		func(r *api.Removed) []field { return []field{{"removed", r.Removed}} })
	changeRole := &cobra.Command{
		Use: "change-role EMAIL ROLE", Short: "Make a member admin or member", Args: cobra.ExactArgs(2),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.MemberEnvelope
			if err := c.do(cmd.Context(), "PATCH", orgPath+"/members/"+pathEscape(args[0]), map[string]any{"role": args[1]}, &out); err != nil {
				return err
			}
			return p.record(&out, memberFields(&out.Member)...)
		}),
	}
	del := &cobra.Command{
		Use: "delete", Short: "Delete the organization, its database and credentials", Args: cobra.NoArgs,
		RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			key := strings.TrimPrefix(orgPath, "/v1/orgs/")
			if err := o.confirm(cmd, "Deleting organization "+key+" drops its database", key); err != nil {
				return err
			}
			var out api.Deleted
			if err := c.do(cmd.Context(), "DELETE", orgPath, nil, &out); err != nil {
				return err
			}
			return p.record(&out, deletedFields(&out)...)
		}),
	}
	var queryLimit, idleLimit string
	limits := &cobra.Command{
		Use:   "limits",
		Short: "Show or set how long the org's read-only logins may run a query or idle in a transaction (server admins)",
		Long: "A query of a read-only login running past --query-limit, or a session idle in a transaction past\n" +
			"--idle-in-transaction-limit, is ended by the server's next maintenance pass (within a minute), whatever\n" +
			"the login set for itself. Keep the query limit long enough for pg_dump of the org's database.",
		Args: cobra.NoArgs,
		RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			path := "/v1/admin/orgs/" + strings.TrimPrefix(orgPath, "/v1/orgs/") + "/limits"
			var out api.OrgLimits
			var err error
			if queryLimit == "" && idleLimit == "" {
				err = c.do(cmd.Context(), "GET", path, nil, &out)
			} else {
				err = c.do(cmd.Context(), "PUT", path, api.OrgLimits{QueryLimit: queryLimit, IdleInTransactionLimit: idleLimit}, &out)
			}
			if err != nil {
				return err
			}
			return p.record(&out, field{"query_limit", out.QueryLimit}, field{"idle_in_transaction_limit", out.IdleInTransactionLimit})
		}),
	}
	limits.Flags().StringVar(&queryLimit, "query-limit", "", "new query limit, e.g. 30m")
	limits.Flags().StringVar(&idleLimit, "idle-in-transaction-limit", "", "new idle-in-transaction limit, e.g. 10m")
	org.AddCommand(create, list, use, info, members, addMember, removeMember, changeRole, del, limits)
	return org
}

func tokensCommand(o *clientOptions) *cobra.Command {
	tokens := &cobra.Command{Use: "tokens", Short: "Your API tokens"}
	var name string
	create := &cobra.Command{
		Use: "create", Short: "Create a token (shown once)", Args: cobra.NoArgs,
		RunE: run(o, false, func(cmd *cobra.Command, _ []string, c *client, p *printer, _ string) error {
			var out api.TokenCreated
			if err := c.do(cmd.Context(), "POST", "/v1/tokens", map[string]any{"name": name}, &out); err != nil {
				return err
			}
			if p.format == "table" {
				fmt.Fprintf(p.w, "%s\n\nThis token is shown only once. Store it now.\n", cell(out.Secret))
				return nil
			}
			return p.json(&out)
		}),
	}
	create.Flags().StringVar(&name, "name", "", "a name to tell it apart")
	list := listCommand(o, "list", "List your tokens", false, "/v1/tokens",
		[]string{"id", "name", "hint", "created_at", "last_used_at", "revoked_at"},
		func(l *api.TokenList) (rows [][]any) {
			for _, t := range l.Tokens {
				rows = append(rows, []any{t.ID, t.Name, t.Hint, t.CreatedAt, t.LastUsedAt, t.RevokedAt})
			}
			return rows
		})
	revoke := deleteCommand(o, "revoke ID", "Revoke a token", false, "Revoking token ", "/v1/tokens/",
		func(r *api.Revoked) []field { return []field{{"revoked", r.Revoked}} })
	tokens.AddCommand(create, list, revoke)
	return tokens
}

func servicesCommand(o *clientOptions) *cobra.Command {
	services := &cobra.Command{Use: "services", Short: "The catalog of services webhookdb understands"}
	list := listCommand(o, "list", "List services", false, "/v1/services", []string{"name", "verifier", "policy", "description"},
		func(l *api.ServiceList) (rows [][]any) {
			for _, s := range l.Services {
				rows = append(rows, []any{s.Name, s.Verifier, s.Policy, s.Description})
			}
			return rows
		})
	get := func(cmd *cobra.Command, c *client, name string) (*api.ServiceEnvelope, error) {
		var out api.ServiceEnvelope
		if err := c.do(cmd.Context(), "GET", "/v1/services/"+pathEscape(name), nil, &out); err != nil {
			return nil, err
		}
		return &out, nil
	}
	info := &cobra.Command{
		Use: "info SERVICE", Short: "A service's columns", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(cmd *cobra.Command, args []string, c *client, p *printer, _ string) error {
			out, err := get(cmd, c, args[0])
			if err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			svc := out.Service
			fmt.Fprintf(p.w, "%s: %s\nverifier: %s, conflict policy: %s, remote key: %s\n\n", cell(svc.Name), cell(svc.Description), cell(svc.Verifier), cell(svc.Policy), cell(svc.RemoteKey))
			var rows [][]any
			for _, col := range svc.Columns {
				rows = append(rows, []any{col.Name, col.Type, col.Indexed})
			}
			return p.table(out, []string{"name", "type", "indexed"}, rows)
		}),
	}
	fixture := &cobra.Command{
		Use: "fixture SERVICE", Short: "Print the table DDL of a service", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(cmd *cobra.Command, args []string, c *client, p *printer, _ string) error {
			out, err := get(cmd, c, args[0])
			if err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			for _, stmt := range out.Service.DDL {
				fmt.Fprintf(p.w, "%s;\n", stmt)
			}
			return nil
		}),
	}
	services.AddCommand(list, info, fixture)
	return services
}

func integrationsCommand(o *clientOptions) *cobra.Command {
	ints := &cobra.Command{Use: "integrations", Short: "Service integrations: where webhooks come in"}
	var secret, config, verifier, grace string
	var bodyLimit int64
	var quiet bool
	var bf backfillFlags
	jsonFlag := func(name, value string, into map[string]any) error {
		if value == "" {
			return nil
		}
		var v any
		if err := json.Unmarshal([]byte(value), &v); err != nil {
			return fmt.Errorf("--%s is not valid JSON: %w", name, err)
		}
		into[name] = v
		return nil
	}
	create := &cobra.Command{
		Use: "create SERVICE", Short: "Create an integration and print its webhook URL", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			body := map[string]any{"service": args[0], "secret": secret}
			if err := jsonFlag("config", config, body); err != nil {
				return err
			}
			if err := jsonFlag("verifier", verifier, body); err != nil {
				return err
			}
			if bodyLimit > 0 {
				body["body_limit_bytes"] = bodyLimit
			}
			var out api.IntegrationCreated
			if err := c.do(cmd.Context(), "POST", orgPath+"/integrations", body, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(&out)
			}
			in := &out.Integration
			if quiet {
				fmt.Fprintln(p.w, cell(in.WebhookURL))
				return nil
			}
			fmt.Fprintf(p.w, "Created %s integration %s; rows land in table %s.\n\n", cell(in.Service), cell(in.OpaqueID), cell(in.TableName))
			fmt.Fprintf(p.w, "1. In the sender's dashboard, add this webhook endpoint URL:\n\n     %s\n\n", cell(in.WebhookURL))
			if secret != "" {
				fmt.Fprintf(p.w, "2. webhookdb verifies deliveries with the secret you gave (%s scheme).\n", cell(in.Verifier.Scheme))
			} else {
				fmt.Fprintf(p.w, "2. Set this as the endpoint's signing secret (%s scheme). It is shown only once:\n\n     %s\n", cell(in.Verifier.Scheme), cell(out.Secret))
			}
			fmt.Fprintf(p.w, "\nIf the sender generates its own secret, pass it instead: webhookdb integrations roll-secret %s --secret ...\n", cell(in.OpaqueID))
			return nil
		}),
	}
	create.Flags().StringVar(&secret, "secret", "", "the signing secret the sender uses (default: generate one)")
	create.Flags().StringVar(&config, "config", "", `replicator settings as JSON, e.g. '{"remote_key_path":"id"}' for json_v1`)
	create.Flags().StringVar(&verifier, "verifier", "", `override the verifier as JSON, e.g. '{"scheme":"hmac","header":"X-Sig","algorithm":"sha256","encoding":"hex"}'`)
	create.Flags().Int64Var(&bodyLimit, "body-limit", 0, "largest body accepted, in bytes (default 1 MiB)")
	create.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the webhook URL (for scripts)")

	integrationTable := func(out *api.IntegrationEnvelope, p *printer) error {
		in := &out.Integration
		return p.record(out,
			field{"opaque_id", in.OpaqueID}, field{"service", in.Service}, field{"table_name", in.TableName}, field{"webhook_url", in.WebhookURL},
			field{"verifier", in.Verifier}, field{"config", in.Config}, field{"body_limit_bytes", in.BodyLimitBytes}, field{"created_at", in.CreatedAt})
	}
	list := listCommand(o, "list", "List integrations", true, "/integrations", []string{"opaque_id", "service", "table_name", "webhook_url"},
		func(l *api.IntegrationList) (rows [][]any) {
			for _, in := range l.Integrations {
				rows = append(rows, []any{in.OpaqueID, in.Service, in.TableName, in.WebhookURL})
			}
			return rows
		})
	info := &cobra.Command{
		Use: "info ID", Short: "Show an integration", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.IntegrationEnvelope
			if err := c.do(cmd.Context(), "GET", orgPath+"/integrations/"+pathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return integrationTable(&out, p)
		}),
	}
	update := &cobra.Command{
		Use: "update ID", Short: "Change verifier, config, body limit or backfill credentials and schedule", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			body := map[string]any{}
			if err := jsonFlag("config", config, body); err != nil {
				return err
			}
			if err := jsonFlag("verifier", verifier, body); err != nil {
				return err
			}
			if bodyLimit > 0 {
				body["body_limit_bytes"] = bodyLimit
			}
			bfBody, err := bf.body(cmd)
			if err != nil {
				return err
			}
			if len(body) == 0 && bfBody == nil {
				return errors.New("nothing to change: pass --config, --verifier, --body-limit or a --backfill-* flag")
			}
			if len(body) > 0 {
				var out api.IntegrationEnvelope
				if err := c.do(cmd.Context(), "PATCH", orgPath+"/integrations/"+pathEscape(args[0]), body, &out); err != nil {
					return err
				}
				if bfBody == nil {
					return integrationTable(&out, p)
				}
			}
			var out api.BackfillSettings
			if err := c.do(cmd.Context(), "PUT", orgPath+"/integrations/"+pathEscape(args[0])+"/backfill", bfBody, &out); err != nil {
				return err
			}
			return backfillSettingsOut(p, &out)
		}),
	}
	bf.add(update)
	update.Flags().StringVar(&config, "config", "", "replicator settings as JSON")
	update.Flags().StringVar(&verifier, "verifier", "", "verifier override as JSON")
	update.Flags().Int64Var(&bodyLimit, "body-limit", 0, "largest body accepted, in bytes")
	del := deleteCommand(o, "delete ID", "Delete an integration (its URL then answers 410)", true, "Deleting integration ", "/integrations/", deletedFields)
	roll := &cobra.Command{
		Use: "roll-secret ID", Short: "New signing secret; the old one keeps working for --grace", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.SecretRolled
			if err := c.do(cmd.Context(), "POST", orgPath+"/integrations/"+pathEscape(args[0])+"/roll-secret", map[string]any{"secret": secret, "grace_period": grace}, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(&out)
			}
			fmt.Fprintf(p.w, "New secret (shown once):\n\n     %s\n\nThe previous secret is accepted until %s.\n", cell(out.Secret), cell(out.PreviousValidUntil))
			return nil
		}),
	}
	roll.Flags().StringVar(&secret, "secret", "", "the new secret (default: generate one)")
	roll.Flags().StringVar(&grace, "grace", "24h", "how long the previous secret stays valid")
	stats := &cobra.Command{
		Use: "stats ID", Short: "Deliveries of the last 7 days", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.IntegrationStats
			if err := c.do(cmd.Context(), "GET", orgPath+"/integrations/"+pathEscape(args[0])+"/stats", nil, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(&out)
			}
			fmt.Fprintf(p.w, "last 7 days: %s accepted, %s rejected\n\n", cell(out.AcceptedLast7d), cell(out.RejectedLast7d))
			var rows [][]any
			for _, d := range out.RecentDeliveries {
				rows = append(rows, []any{d.ID, d.ReceivedAt, d.Outcome, d.Reason, d.DeliveryID})
			}
			return p.table(&out, []string{"id", "received_at", "outcome", "reason", "delivery_id"}, rows)
		}),
	}
	ints.AddCommand(create, list, info, update, del, roll, stats)
	return ints
}

// sqlClientTimeout is the client's timeout for `db sql --timeout flag`: the query's own timeout plus a minute
// to connect and stream the rows, and never less than any other call gets.
func sqlClientTimeout(flag string) time.Duration {
	d, err := time.ParseDuration(flag)
	if err != nil {
		return clientTimeout // empty (the server's default) or invalid (the server says why)
	}
	return max(clientTimeout, d+time.Minute)
}

// saveCACert writes a credential's CA certificate to path (when path is set) and points the URL's sslrootcert
// at it, so psql verifies the server against that CA.
func saveCACert(c *api.Credential, path string) error {
	if path == "" {
		return nil
	}
	if c.CACert == "" {
		return errors.New("--ca-file: this database server has no CA certificate (its sslmode is not verify-ca or verify-full)")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("--ca-file: %w", err)
	}
	if err := os.WriteFile(abs, []byte(c.CACert), 0o644); err != nil {
		return fmt.Errorf("--ca-file: %w", err)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return errors.New("the server answered a connection URL that does not parse")
	}
	q := u.Query()
	q.Set("sslrootcert", abs)
	u.RawQuery = q.Encode()
	c.URL = u.String()
	return nil
}

func dbCommand(o *clientOptions) *cobra.Command {
	db := &cobra.Command{Use: "db", Short: "Your organization's database"}
	var rollAll bool
	credential := func(method, suffix string) *cobra.Command {
		var caFile string
		cmd := &cobra.Command{
			Args: cobra.NoArgs,
			RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
				path := orgPath + suffix
				if suffix == "/db/roll-credentials" {
					what := "Rolling your credentials disconnects every session using your current ones"
					if rollAll {
						what = "Rolling every member's credentials disconnects every session of the organization's database"
						path += "?all=true"
					}
					if err := o.confirm(cmd, what, "roll"); err != nil {
						return err
					}
				}
				var out api.Credential
				if err := c.do(cmd.Context(), method, path, nil, &out); err != nil {
					return err
				}
				if err := saveCACert(&out, caFile); err != nil {
					return err
				}
				if p.format == "json" {
					return p.json(&out)
				}
				fmt.Fprintf(p.w, "%s\n", cell(out.URL))
				fmt.Fprintf(cmd.ErrOrStderr(), "user %s, valid until %s\n", cell(out.Username), cell(out.ExpiresAt))
				if out.CACert != "" && caFile == "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "the server is verified against its own CA: pass --ca-file PATH to save the certificate and have the URL point at it (sslrootcert)\n")
				}
				return nil
			}),
		}
		cmd.Flags().StringVar(&caFile, "ca-file", "", "save the database server's CA certificate here and put it into the URL as sslrootcert (servers with sslmode verify-ca or verify-full)")
		return cmd
	}
	conn := credential("GET", "/db/connection")
	conn.Use, conn.Short = "connection", "Print your own read-only connection URL (for psql or a BI tool)"
	roll := credential("POST", "/db/roll-credentials")
	roll.Use, roll.Short = "roll-credentials", "New credentials for you; your old ones stop working at once (--all: everyone's, admins)"
	roll.Flags().BoolVar(&rollAll, "all", false, "roll every member's credentials and the server's own (org admins); the others get new ones on their next db connection")
	tables := listCommand(o, "tables", "List tables", true, "/db/tables", []string{"name", "estimated_rows"},
		func(l *api.TableList) (rows [][]any) {
			for _, t := range l.Tables {
				rows = append(rows, []any{t.Name, t.EstimateRows})
			}
			return rows
		})
	var maxRows int
	var timeout string
	sql := &cobra.Command{
		Use: "sql QUERY", Short: "Run a read-only query on the organization's database (the server's own login)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			c.http.Timeout = sqlClientTimeout(timeout)
			var out api.SQLResult
			if err := c.do(cmd.Context(), "POST", orgPath+"/db/sql", map[string]any{"query": args[0], "max_rows": maxRows, "timeout": timeout}, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(&out)
			}
			if err := p.table(&out, out.Columns, out.Rows); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "(%d rows)\n", out.RowCount)
			switch {
			case out.Truncated && out.TruncatedBy == "max_bytes":
				fmt.Fprintf(cmd.ErrOrStderr(), "truncated at %d bytes: select fewer columns or add LIMIT\n", out.MaxBytes)
			case out.Truncated:
				fmt.Fprintf(cmd.ErrOrStderr(), "truncated at %d rows: add LIMIT or pass --max-rows\n", out.MaxRows)
			}
			if out.Error != "" {
				return errors.New(out.Error)
			}
			return nil
		}),
	}
	sql.Flags().IntVar(&maxRows, "max-rows", 0, "row cap (default 1000)")
	sql.Flags().StringVar(&timeout, "timeout", "", "query timeout, e.g. 30s (at most 5m)")
	db.AddCommand(conn, tables, sql, roll)
	return db
}

func webhooksCommand(o *clientOptions) *cobra.Command {
	wh := &cobra.Command{Use: "webhooks", Short: "Deliveries received, accepted or rejected"}
	var integration, outcome, source string
	var limit int
	var includeBackfill bool
	list := &cobra.Command{
		Use: "list", Short: "Recent deliveries with their outcome", Args: cobra.NoArgs,
		RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			q := url.Values{}
			if integration != "" {
				q.Set("integration", integration)
			}
			if outcome != "" {
				q.Set("outcome", outcome)
			}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			if source != "" {
				q.Set("source", source)
			}
			if includeBackfill {
				q.Set("include_backfill", "true")
			}
			var out api.DeliveryList
			if err := c.do(cmd.Context(), "GET", orgPath+"/webhooks?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			var rows [][]any
			for _, d := range out.Webhooks {
				rows = append(rows, []any{d.ID, d.ReceivedAt, d.Integration, d.Outcome, d.Reason, d.DeliveryID, d.Bytes})
			}
			return p.table(&out, []string{"id", "received_at", "integration", "outcome", "reason", "delivery_id", "bytes"}, rows)
		}),
	}
	list.Flags().StringVar(&integration, "integration", "", "only this integration (opaque id)")
	list.Flags().StringVar(&outcome, "outcome", "", "accepted or rejected")
	list.Flags().IntVar(&limit, "limit", 50, "how many")
	list.Flags().StringVar(&source, "source", "", "only these sources, comma-separated: webhook, backfill, replay, resync (default: all but backfill)")
	list.Flags().BoolVar(&includeBackfill, "include-backfill", false, "list objects stored by backfills too")
	show := &cobra.Command{
		Use: "show ID", Short: "One delivery with headers and body", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out api.DeliveryEnvelope
			if err := c.do(cmd.Context(), "GET", orgPath+"/webhooks/"+pathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(&out)
			}
			w := &out.Webhook
			err := p.record(&out,
				field{"id", w.ID}, field{"received_at", w.ReceivedAt}, field{"integration", w.Integration}, field{"service", w.Service},
				field{"outcome", w.Outcome}, field{"reason", w.Reason}, field{"delivery_id", w.DeliveryID}, field{"method", w.Method},
				field{"path", w.Path}, field{"query", w.Query}, field{"content_type", w.ContentType}, field{"replay_of", w.ReplayOf},
				field{"bytes", w.Bytes}, field{"body_truncated", w.BodyTruncated})
			if err != nil {
				return err
			}
			fmt.Fprintln(p.w, "\nheaders:")
			names := make([]string, 0, len(w.Headers))
			for name := range w.Headers {
				names = append(names, name)
			}
			sort.Strings(names)
			headers := make([]field, len(names))
			for i, name := range names {
				headers[i] = field{name, w.Headers[name]}
			}
			if err := p.record(nil, headers...); err != nil {
				return err
			}
			fmt.Fprintln(p.w, "\nbody:")
			fmt.Fprintln(p.w, cell(w.Body))
			return nil
		}),
	}
	wh.AddCommand(list, show)
	return wh
}

func replayCommand(o *clientOptions) *cobra.Command {
	var since, until, integration string
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Re-send stored deliveries of a window through the fanout (idempotent)",
		Args:  cobra.NoArgs,
		RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			s, err := parseWhen(since)
			if err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			body := map[string]any{"since": s, "integration": integration}
			if until != "" {
				u, err := parseWhen(until)
				if err != nil {
					return fmt.Errorf("--until: %w", err)
				}
				body["until"] = u
			}
			if isTerminal(os.Stderr) {
				fmt.Fprint(cmd.ErrOrStderr(), "replaying...")
			}
			var out api.ReplayResult
			err = c.do(cmd.Context(), "POST", orgPath+"/replay", body, &out)
			if isTerminal(os.Stderr) {
				fmt.Fprint(cmd.ErrOrStderr(), "\r            \r")
			}
			if err != nil {
				return err
			}
			return p.record(&out, field{"replayed", out.Replayed}, field{"since", out.Since}, field{"until", out.Until})
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "start of the window: RFC 3339 time or a duration ago, e.g. 2h")
	cmd.Flags().StringVar(&until, "until", "", "end of the window (default now)")
	cmd.Flags().StringVar(&integration, "integration", "", "only this integration (opaque id)")
	_ = cmd.MarkFlagRequired("since")
	return cmd
}

// parseWhen reads an RFC 3339 time or a duration meaning "that long ago".
func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
}

func errorsCommand(o *clientOptions) *cobra.Command {
	errs := &cobra.Command{Use: "errors", Short: "Changes the fanout parked or could not apply"}
	var integration string
	query := func() string {
		if integration == "" {
			return ""
		}
		return "?integration=" + url.QueryEscape(integration)
	}
	list := &cobra.Command{
		Use: "list", Short: "List parked and failed changes", Args: cobra.NoArgs,
		RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			var out api.ErrorList
			if err := c.do(cmd.Context(), "GET", orgPath+"/errors"+query(), nil, &out); err != nil {
				return err
			}
			var rows [][]any
			for _, e := range out.Errors {
				rows = append(rows, []any{e.ID, e.Kind, e.Integration, e.WebhookID, e.Attempts, e.Error, e.NextAttemptAt})
			}
			if err := p.table(&out, []string{"id", "kind", "integration", "webhook_id", "attempts", "error", "next_attempt_at"}, rows); err != nil || p.format == "json" {
				return err
			}
			return failedBackfills(p, out.BackfillJobs)
		}),
	}
	retry := &cobra.Command{
		Use: "retry [ID]", Short: "Retry them now, or one failed change by the id errors list shows", Args: cobra.MaximumNArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			path := orgPath + "/errors/retry" + query()
			if len(args) == 1 {
				if integration != "" {
					return errors.New("--integration selects changes to retry; with an ID, leave it out")
				}
				id, err := failedChangeID(args[0])
				if err != nil {
					return err
				}
				path = orgPath + "/errors/" + id + "/retry"
			}
			var out api.RetryResult
			if err := c.do(cmd.Context(), "POST", path, nil, &out); err != nil {
				return err
			}
			return p.record(&out, field{"retrying", out.Retrying})
		}),
	}
	skip := &cobra.Command{
		Use: "skip ID", Short: "Drop a failed change for good (the id errors list shows)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			id, err := failedChangeID(args[0])
			if err != nil {
				return err
			}
			if err := o.confirm(cmd, "Skipping failed change "+id+" drops it for good", id); err != nil {
				return err
			}
			var out api.Skipped
			if err := c.do(cmd.Context(), "POST", orgPath+"/errors/"+id+"/skip", nil, &out); err != nil {
				return err
			}
			return p.record(&out, field{"skipped", out.Skipped})
		}),
	}
	for _, c := range []*cobra.Command{list, retry} {
		c.Flags().StringVar(&integration, "integration", "", "only this integration (opaque id)")
	}
	errs.AddCommand(list, retry, skip)
	return errs
}

// failedChangeID checks a failed change's id (a number, as errors list shows it) before it goes into a path.
func failedChangeID(arg string) (string, error) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id <= 0 {
		return "", fmt.Errorf("%q is not a failed change's id: errors list shows them", arg)
	}
	return strconv.FormatInt(id, 10), nil
}

func serversCommand(o *clientOptions) *cobra.Command {
	servers := &cobra.Command{Use: "servers", Short: "Database servers that hold org databases (server admins)"}
	var adminURL, host, sslmode, caFile string
	var port int
	add := &cobra.Command{
		Use: "add NAME", Short: "Register a database server", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(cmd *cobra.Command, args []string, c *client, p *printer, _ string) error {
			var caCert []byte
			if caFile != "" {
				var err error
				if caCert, err = os.ReadFile(caFile); err != nil {
					return fmt.Errorf("--ca-file: %w", err)
				}
			}
			var out api.ServerEnvelope
			reg := api.ServerRegistration{Name: args[0], AdminURL: adminURL, PublicHost: host, PublicPort: port, SSLMode: sslmode, CACert: string(caCert)}
			if err := c.do(cmd.Context(), "POST", "/v1/admin/servers", reg, &out); err != nil {
				return err
			}
			s := &out.Server
			return p.record(&out, field{"name", s.Name}, field{"public_host", s.PublicHost}, field{"public_port", s.PublicPort}, field{"sslmode", s.SSLMode})
		}),
	}
	add.Flags().StringVar(&adminURL, "admin-url", "", "URL webhookdb provisions with (stored encrypted)")
	add.Flags().StringVar(&host, "public-host", "", "host users connect to")
	add.Flags().IntVar(&port, "public-port", 5432, "port users connect to")
	add.Flags().StringVar(&sslmode, "sslmode", "", "sslmode put into read-only URLs: require (the default), verify-full or verify-ca (with --ca-file), or disable (loopback hosts only; their default)")
	add.Flags().StringVar(&caFile, "ca-file", "", "PEM certificate of the CA that signed the server's certificate (for verify-full and verify-ca); users get it with db connection --ca-file")
	list := listCommand(o, "list", "List database servers", false, "/v1/admin/servers", []string{"name", "public_host", "public_port", "sslmode", "orgs"},
		func(l *api.ServerList) (rows [][]any) {
			for _, s := range l.Servers {
				rows = append(rows, []any{s.Name, s.PublicHost, s.PublicPort, s.SSLMode, s.Orgs})
			}
			return rows
		})
	servers.AddCommand(add, list)
	return servers
}

// fanoutStatusCommand is `webhookdb fanout status`: the running fanout's slot lag and parked/failed counts.
func fanoutStatusCommand() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use: "status", Short: "Slot lag and parked/failed counts of the fanout (server admins)", Args: cobra.NoArgs,
		RunE: run(o, false, func(cmd *cobra.Command, _ []string, c *client, p *printer, _ string) error {
			var st fanout.Status
			if err := c.do(cmd.Context(), "GET", "/v1/admin/fanout", nil, &st); err != nil {
				return err
			}
			return p.record(&st,
				field{"active", st.Active}, field{"confirmed_flush_lsn", st.ConfirmedFlushLSN}, field{"exists", st.Exists},
				field{"failed_changes", st.FailedChanges}, field{"lag_bytes", st.LagBytes}, field{"oldest_parked_at", st.OldestParkedAt},
				field{"orgs_with_parked_changes", st.OrgsWithParked}, field{"parked_changes", st.ParkedChanges}, field{"slot", st.Slot},
				field{"wal_status", st.WALStatus})
		}),
	}
	addClientFlags(cmd, o)
	return cmd
}
