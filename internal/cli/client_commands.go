package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// clientCommands builds the commands that talk to the management API.
func clientCommands() []*cobra.Command {
	o := &clientOptions{}
	cmds := []*cobra.Command{
		authCommand(o), orgCommand(o), tokensCommand(o), servicesCommand(o), integrationsCommand(o),
		dbCommand(o), webhooksCommand(o), replayCommand(o), errorsCommand(o), serversCommand(o),
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

// listCommand is a command that GETs a list and prints it as a table of columns (or the API's JSON).
func listCommand(o *clientOptions, use, short string, inOrg bool, path, key string, columns ...string) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: run(o, inOrg, func(_ *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("GET", orgPath+path, nil, &out); err != nil {
				return err
			}
			return p.table(out, asMaps(out[key]), columns...)
		}),
	}
}

// deleteCommand is a destructive command on one named thing: it confirms (what + the name), DELETEs
// path + name, and prints the answer.
func deleteCommand(o *clientOptions, use, short string, inOrg bool, what, path string) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: run(o, inOrg, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			if err := o.confirm(cmd, what+args[0], args[0]); err != nil {
				return err
			}
			var out map[string]any
			if err := c.do("DELETE", orgPath+path+pathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return p.record(out, out)
		}),
	}
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
			var me map[string]any
			if err := c.do("GET", "/v1/me", nil, &me); err != nil {
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
			user, _ := me["user"].(map[string]any)
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s as %s.\n", c.baseURL, cell(user["email"]))
			return nil
		},
	}
	login.Flags().StringVar(&apiURL, "url", envOr("WEBHOOKDB_API_URL", ""), "API URL (WEBHOOKDB_API_URL)")
	login.Flags().StringVar(&token, "token", envOr("WEBHOOKDB_TOKEN", ""), "API token (WEBHOOKDB_TOKEN)")
	whoami := &cobra.Command{
		Use: "whoami", Short: "Show the logged-in user and their organizations", Args: cobra.NoArgs,
		RunE: run(o, false, func(_ *cobra.Command, _ []string, c *client, p *printer, _ string) error {
			var me map[string]any
			if err := c.do("GET", "/v1/me", nil, &me); err != nil {
				return err
			}
			user, _ := me["user"].(map[string]any)
			var keys []string
			for _, org := range asMaps(me["orgs"]) {
				keys = append(keys, fmt.Sprintf("%s (%s)", cell(org["key"]), cell(org["role"])))
			}
			return p.record(me, map[string]any{"email": user["email"], "server_admin": user["server_admin"], "orgs": strings.Join(keys, ", ")}, "email", "server_admin", "orgs")
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

func orgCommand(o *clientOptions) *cobra.Command {
	org := &cobra.Command{Use: "org", Short: "Organizations and their members"}
	var name, role string
	create := &cobra.Command{
		Use: "create KEY", Short: "Create an organization (and its database)", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(cmd *cobra.Command, args []string, c *client, p *printer, _ string) error {
			var out map[string]any
			if err := c.do("POST", "/v1/orgs", map[string]any{"key": args[0], "name": name}, &out); err != nil {
				return err
			}
			if p.format == "table" {
				fmt.Fprintf(p.w, "Created organization %s. Make it the default with: webhookdb org use %s\n", args[0], args[0])
				return nil
			}
			return p.json(out)
		}),
	}
	create.Flags().StringVar(&name, "name", "", "display name (default: the key)")
	list := listCommand(o, "list", "List your organizations", false, "/v1/orgs", "orgs", "key", "name", "role", "database", "provision_state")
	use := &cobra.Command{
		Use: "use KEY", Short: "Make KEY the default organization of later commands", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(cmd *cobra.Command, args []string, c *client, _ *printer, _ string) error {
			if err := c.do("GET", "/v1/orgs/"+pathEscape(args[0]), nil, nil); err != nil {
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
		RunE: run(o, true, func(_ *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("GET", orgPath, nil, &out); err != nil {
				return err
			}
			org, _ := out["org"].(map[string]any)
			return p.record(out, org, "key", "name", "role", "database", "provision_state", "created_at")
		}),
	}
	members := listCommand(o, "members", "List members", true, "/members", "members", "email", "role", "added_at")
	addMember := &cobra.Command{
		Use: "add-member EMAIL", Short: "Add a member (--role admin|member)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("POST", orgPath+"/members", map[string]any{"email": args[0], "role": role}, &out); err != nil {
				return err
			}
			m, _ := out["member"].(map[string]any)
			return p.record(out, m, "email", "role")
		}),
	}
	addMember.Flags().StringVar(&role, "role", "member", "admin or member")
	removeMember := deleteCommand(o, "remove-member EMAIL", "Remove a member (or yourself: leave)", true, "Removing ", "/members/")
	changeRole := &cobra.Command{
		Use: "change-role EMAIL ROLE", Short: "Make a member admin or member", Args: cobra.ExactArgs(2),
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("PATCH", orgPath+"/members/"+pathEscape(args[0]), map[string]any{"role": args[1]}, &out); err != nil {
				return err
			}
			m, _ := out["member"].(map[string]any)
			return p.record(out, m, "email", "role")
		}),
	}
	del := &cobra.Command{
		Use: "delete", Short: "Delete the organization, its database and credentials", Args: cobra.NoArgs,
		RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			key := strings.TrimPrefix(orgPath, "/v1/orgs/")
			if err := o.confirm(cmd, "Deleting organization "+key+" drops its database", key); err != nil {
				return err
			}
			var out map[string]any
			if err := c.do("DELETE", orgPath, nil, &out); err != nil {
				return err
			}
			return p.record(out, out)
		}),
	}
	org.AddCommand(create, list, use, info, members, addMember, removeMember, changeRole, del)
	return org
}

func tokensCommand(o *clientOptions) *cobra.Command {
	tokens := &cobra.Command{Use: "tokens", Short: "Your API tokens"}
	var name string
	create := &cobra.Command{
		Use: "create", Short: "Create a token (shown once)", Args: cobra.NoArgs,
		RunE: run(o, false, func(_ *cobra.Command, _ []string, c *client, p *printer, _ string) error {
			var out map[string]any
			if err := c.do("POST", "/v1/tokens", map[string]any{"name": name}, &out); err != nil {
				return err
			}
			if p.format == "table" {
				fmt.Fprintf(p.w, "%s\n\nThis token is shown only once. Store it now.\n", cell(out["secret"]))
				return nil
			}
			return p.json(out)
		}),
	}
	create.Flags().StringVar(&name, "name", "", "a name to tell it apart")
	list := listCommand(o, "list", "List your tokens", false, "/v1/tokens", "tokens", "id", "name", "hint", "created_at", "last_used_at", "revoked_at")
	revoke := deleteCommand(o, "revoke ID", "Revoke a token", false, "Revoking token ", "/v1/tokens/")
	tokens.AddCommand(create, list, revoke)
	return tokens
}

func servicesCommand(o *clientOptions) *cobra.Command {
	services := &cobra.Command{Use: "services", Short: "The catalog of services webhookdb understands"}
	list := listCommand(o, "list", "List services", false, "/v1/services", "services", "name", "verifier", "policy", "description")
	get := func(c *client, name string) (map[string]any, map[string]any, error) {
		var out map[string]any
		if err := c.do("GET", "/v1/services/"+pathEscape(name), nil, &out); err != nil {
			return nil, nil, err
		}
		svc, _ := out["service"].(map[string]any)
		return out, svc, nil
	}
	info := &cobra.Command{
		Use: "info SERVICE", Short: "A service's columns", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(_ *cobra.Command, args []string, c *client, p *printer, _ string) error {
			out, svc, err := get(c, args[0])
			if err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			fmt.Fprintf(p.w, "%s: %s\nverifier: %s, conflict policy: %s, remote key: %s\n\n", cell(svc["name"]), cell(svc["description"]), cell(svc["verifier"]), cell(svc["policy"]), cell(svc["remote_key"]))
			return p.table(out, asMaps(svc["columns"]), "name", "type", "indexed")
		}),
	}
	fixture := &cobra.Command{
		Use: "fixture SERVICE", Short: "Print the table DDL of a service", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(_ *cobra.Command, args []string, c *client, p *printer, _ string) error {
			out, svc, err := get(c, args[0])
			if err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			for _, stmt := range svc["ddl"].([]any) {
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
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
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
			var out map[string]any
			if err := c.do("POST", orgPath+"/integrations", body, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			in, _ := out["integration"].(map[string]any)
			if quiet {
				fmt.Fprintln(p.w, cell(in["webhook_url"]))
				return nil
			}
			fmt.Fprintf(p.w, "Created %s integration %s; rows land in table %s.\n\n", cell(in["service"]), cell(in["opaque_id"]), cell(in["table_name"]))
			fmt.Fprintf(p.w, "1. In the sender's dashboard, add this webhook endpoint URL:\n\n     %s\n\n", cell(in["webhook_url"]))
			if secret != "" {
				fmt.Fprintf(p.w, "2. webhookdb verifies deliveries with the secret you gave (%s scheme).\n", cell(mapGet(in, "verifier", "scheme")))
			} else {
				fmt.Fprintf(p.w, "2. Set this as the endpoint's signing secret (%s scheme). It is shown only once:\n\n     %s\n", cell(mapGet(in, "verifier", "scheme")), cell(out["secret"]))
			}
			fmt.Fprintf(p.w, "\nIf the sender generates its own secret, pass it instead: webhookdb integrations roll-secret %s --secret ...\n", cell(in["opaque_id"]))
			return nil
		}),
	}
	create.Flags().StringVar(&secret, "secret", "", "the signing secret the sender uses (default: generate one)")
	create.Flags().StringVar(&config, "config", "", `replicator settings as JSON, e.g. '{"remote_key_path":"id"}' for json_v1`)
	create.Flags().StringVar(&verifier, "verifier", "", `override the verifier as JSON, e.g. '{"scheme":"hmac","header":"X-Sig","algorithm":"sha256","encoding":"hex"}'`)
	create.Flags().Int64Var(&bodyLimit, "body-limit", 0, "largest body accepted, in bytes (default 1 MiB)")
	create.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the webhook URL (for scripts)")

	integrationTable := func(out map[string]any, p *printer) error {
		in, _ := out["integration"].(map[string]any)
		return p.record(out, map[string]any{
			"opaque_id": in["opaque_id"], "service": in["service"], "table_name": in["table_name"], "webhook_url": in["webhook_url"],
			"verifier": in["verifier"], "config": in["config"], "body_limit_bytes": in["body_limit_bytes"], "created_at": in["created_at"],
		}, "opaque_id", "service", "table_name", "webhook_url", "verifier", "config", "body_limit_bytes", "created_at")
	}
	list := listCommand(o, "list", "List integrations", true, "/integrations", "integrations", "opaque_id", "service", "table_name", "webhook_url")
	info := &cobra.Command{
		Use: "info ID", Short: "Show an integration", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("GET", orgPath+"/integrations/"+pathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return integrationTable(out, p)
		}),
	}
	update := &cobra.Command{
		Use: "update ID", Short: "Change verifier, config or body limit", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
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
			if len(body) == 0 {
				return errors.New("nothing to change: pass --config, --verifier or --body-limit")
			}
			var out map[string]any
			if err := c.do("PATCH", orgPath+"/integrations/"+pathEscape(args[0]), body, &out); err != nil {
				return err
			}
			return integrationTable(out, p)
		}),
	}
	update.Flags().StringVar(&config, "config", "", "replicator settings as JSON")
	update.Flags().StringVar(&verifier, "verifier", "", "verifier override as JSON")
	update.Flags().Int64Var(&bodyLimit, "body-limit", 0, "largest body accepted, in bytes")
	del := deleteCommand(o, "delete ID", "Delete an integration (its URL then answers 410)", true, "Deleting integration ", "/integrations/")
	roll := &cobra.Command{
		Use: "roll-secret ID", Short: "New signing secret; the old one keeps working for --grace", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("POST", orgPath+"/integrations/"+pathEscape(args[0])+"/roll-secret", map[string]any{"secret": secret, "grace_period": grace}, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			fmt.Fprintf(p.w, "New secret (shown once):\n\n     %s\n\nThe previous secret is accepted until %s.\n", cell(out["secret"]), cell(out["previous_valid_until"]))
			return nil
		}),
	}
	roll.Flags().StringVar(&secret, "secret", "", "the new secret (default: generate one)")
	roll.Flags().StringVar(&grace, "grace", "24h", "how long the previous secret stays valid")
	stats := &cobra.Command{
		Use: "stats ID", Short: "Deliveries of the last 7 days", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("GET", orgPath+"/integrations/"+pathEscape(args[0])+"/stats", nil, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			fmt.Fprintf(p.w, "last 7 days: %s accepted, %s rejected\n\n", cell(out["accepted_last_7d"]), cell(out["rejected_last_7d"]))
			return p.table(out, asMaps(out["recent_deliveries"]), "id", "received_at", "outcome", "reason", "delivery_id")
		}),
	}
	ints.AddCommand(create, list, info, update, del, roll, stats)
	return ints
}

func mapGet(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func dbCommand(o *clientOptions) *cobra.Command {
	db := &cobra.Command{Use: "db", Short: "Your organization's database"}
	credential := func(method, suffix string) *cobra.Command {
		return &cobra.Command{
			Args: cobra.NoArgs,
			RunE: run(o, true, func(cmd *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
				if suffix == "/db/roll-credentials" {
					if err := o.confirm(cmd, "Rolling credentials disconnects everyone using the current ones", "roll"); err != nil {
						return err
					}
				}
				var out map[string]any
				if err := c.do(method, orgPath+suffix, nil, &out); err != nil {
					return err
				}
				if p.format == "json" {
					return p.json(out)
				}
				fmt.Fprintf(p.w, "%s\n", cell(out["url"]))
				fmt.Fprintf(cmd.ErrOrStderr(), "user %s, valid until %s\n", cell(out["username"]), cell(out["expires_at"]))
				return nil
			}),
		}
	}
	conn := credential("GET", "/db/connection")
	conn.Use, conn.Short = "connection", "Print the read-only connection URL (for psql or a BI tool)"
	roll := credential("POST", "/db/roll-credentials")
	roll.Use, roll.Short = "roll-credentials", "New credentials; the old ones stop working at once"
	tables := listCommand(o, "tables", "List tables", true, "/db/tables", "tables", "name", "estimated_rows")
	var maxRows int
	var timeout string
	sql := &cobra.Command{
		Use: "sql QUERY", Short: "Run a query on your read-only credentials", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out struct {
				Columns   []string `json:"columns"`
				Rows      [][]any  `json:"rows"`
				RowCount  int      `json:"row_count"`
				Truncated bool     `json:"truncated"`
				MaxRows   int      `json:"max_rows"`
				Error     string   `json:"error"`
			}
			if err := c.do("POST", orgPath+"/db/sql", map[string]any{"query": args[0], "max_rows": maxRows, "timeout": timeout}, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			rows := make([]map[string]any, len(out.Rows))
			for i, r := range out.Rows {
				rows[i] = map[string]any{}
				for j, col := range out.Columns {
					if j < len(r) {
						rows[i][col] = r[j]
					}
				}
			}
			if err := p.table(out, rows, out.Columns...); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "(%d rows)\n", out.RowCount)
			if out.Truncated {
				fmt.Fprintf(cmd.ErrOrStderr(), "truncated at %d rows: add LIMIT or pass --max-rows\n", out.MaxRows)
			}
			if out.Error != "" {
				return errors.New(out.Error)
			}
			return nil
		}),
	}
	sql.Flags().IntVar(&maxRows, "max-rows", 0, "row cap (default 1000)")
	sql.Flags().StringVar(&timeout, "timeout", "", "query timeout, e.g. 30s")
	db.AddCommand(conn, tables, sql, roll)
	return db
}

func webhooksCommand(o *clientOptions) *cobra.Command {
	wh := &cobra.Command{Use: "webhooks", Short: "Deliveries received, accepted or rejected"}
	var integration, outcome string
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "Recent deliveries with their outcome", Args: cobra.NoArgs,
		RunE: run(o, true, func(_ *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
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
			var out map[string]any
			if err := c.do("GET", orgPath+"/webhooks?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			return p.table(out, asMaps(out["webhooks"]), "id", "received_at", "integration", "outcome", "reason", "delivery_id", "bytes")
		}),
	}
	list.Flags().StringVar(&integration, "integration", "", "only this integration (opaque id)")
	list.Flags().StringVar(&outcome, "outcome", "", "accepted or rejected")
	list.Flags().IntVar(&limit, "limit", 50, "how many")
	show := &cobra.Command{
		Use: "show ID", Short: "One delivery with headers and body", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(_ *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("GET", orgPath+"/webhooks/"+pathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if p.format == "json" {
				return p.json(out)
			}
			w, _ := out["webhook"].(map[string]any)
			if err := p.record(out, w, "id", "received_at", "integration", "service", "outcome", "reason", "delivery_id", "method", "path", "query", "content_type", "replay_of", "bytes", "body_truncated"); err != nil {
				return err
			}
			fmt.Fprintln(p.w, "\nheaders:")
			if h, ok := w["headers"].(map[string]any); ok {
				if err := p.record(nil, h); err != nil {
					return err
				}
			}
			fmt.Fprintln(p.w, "\nbody:")
			fmt.Fprintln(p.w, cell(w["body"]))
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
			var out map[string]any
			err = c.do("POST", orgPath+"/replay", body, &out)
			if isTerminal(os.Stderr) {
				fmt.Fprint(cmd.ErrOrStderr(), "\r            \r")
			}
			if err != nil {
				return err
			}
			return p.record(out, out, "replayed", "since", "until")
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
		RunE: run(o, true, func(_ *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("GET", orgPath+"/errors"+query(), nil, &out); err != nil {
				return err
			}
			return p.table(out, asMaps(out["errors"]), "kind", "integration", "webhook_id", "attempts", "error", "next_attempt_at")
		}),
	}
	retry := &cobra.Command{
		Use: "retry", Short: "Retry them now", Args: cobra.NoArgs,
		RunE: run(o, true, func(_ *cobra.Command, _ []string, c *client, p *printer, orgPath string) error {
			var out map[string]any
			if err := c.do("POST", orgPath+"/errors/retry"+query(), nil, &out); err != nil {
				return err
			}
			return p.record(out, out)
		}),
	}
	for _, c := range []*cobra.Command{list, retry} {
		c.Flags().StringVar(&integration, "integration", "", "only this integration (opaque id)")
	}
	errs.AddCommand(list, retry)
	return errs
}

func serversCommand(o *clientOptions) *cobra.Command {
	servers := &cobra.Command{Use: "servers", Short: "Database servers that hold org databases (server admins)"}
	var adminURL, host, sslmode string
	var port int
	add := &cobra.Command{
		Use: "add NAME", Short: "Register a database server", Args: cobra.ExactArgs(1),
		RunE: run(o, false, func(_ *cobra.Command, args []string, c *client, p *printer, _ string) error {
			var out map[string]any
			if err := c.do("POST", "/v1/admin/servers", map[string]any{"name": args[0], "admin_url": adminURL, "public_host": host, "public_port": port, "sslmode": sslmode}, &out); err != nil {
				return err
			}
			s, _ := out["server"].(map[string]any)
			return p.record(out, s, "name", "public_host", "public_port", "sslmode")
		}),
	}
	add.Flags().StringVar(&adminURL, "admin-url", "", "URL webhookdb provisions with (stored encrypted)")
	add.Flags().StringVar(&host, "public-host", "", "host users connect to")
	add.Flags().IntVar(&port, "public-port", 5432, "port users connect to")
	add.Flags().StringVar(&sslmode, "sslmode", "prefer", "sslmode put into read-only URLs")
	list := listCommand(o, "list", "List database servers", false, "/v1/admin/servers", "servers", "name", "public_host", "public_port", "sslmode", "orgs")
	servers.AddCommand(add, list)
	return servers
}

// fanoutStatusCommand is `webhookdb fanout status`: the running fanout's slot lag and parked/failed counts.
func fanoutStatusCommand() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use: "status", Short: "Slot lag and parked/failed counts of the fanout (server admins)", Args: cobra.NoArgs,
		RunE: run(o, false, func(_ *cobra.Command, _ []string, c *client, p *printer, _ string) error {
			var out map[string]any
			if err := c.do("GET", "/v1/admin/fanout", nil, &out); err != nil {
				return err
			}
			return p.record(out, out)
		}),
	}
	addClientFlags(cmd, o)
	return cmd
}
