package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/api"
)

// savedQueryCommand is `saved-query`: named read-only queries of the org, run on the server's own login, and
// their public URLs.
func savedQueryCommand(o *clientOptions) *cobra.Command {
	sq := &cobra.Command{Use: "saved-query", Aliases: []string{"saved-queries"}, Short: "Saved queries of your organization and their public URLs"}
	const base = "/saved-queries/"

	// printSaved prints a saved query and, when the answer has one, its new public URL (shown once).
	printSaved := func(cmd *cobra.Command, p *printer, out *api.SavedQueryEnvelope) error {
		if p.format == "json" {
			return p.json(out)
		}
		q := out.SavedQuery
		if err := p.record(out, field{"name", q.Name}, field{"public", q.Public}, field{"token_hint", q.TokenHint}, field{"sql", q.SQL}); err != nil {
			return err
		}
		if out.PublicURL != "" {
			fmt.Fprintf(p.w, "\n%s\n", out.PublicURL)
			fmt.Fprintf(cmd.ErrOrStderr(), "Anyone with this URL can read the query's result (add ?format=csv for CSV). It is shown only once; `saved-query roll-token %s` replaces it, `saved-query unpublish %s` revokes it.\n", q.Name, q.Name)
		}
		return nil
	}

	var sqlText, sqlFile string
	var public bool
	create := &cobra.Command{
		Use: "create NAME --sql SQL|--sql-file PATH [--public]", Short: "Save a read-only query (checked now on the organization's database); --public gives it a URL (admins)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			if sqlFile != "" {
				if sqlText != "" {
					return errors.New("give --sql or --sql-file, not both")
				}
				b, err := readInput(cmd, sqlFile)
				if err != nil {
					return err
				}
				sqlText = string(b)
			}
			var out api.SavedQueryEnvelope
			if err := c.do(cmd.Context(), "POST", orgPath+"/saved-queries", map[string]any{"name": args[0], "sql": sqlText, "public": public}, &out); err != nil {
				return err
			}
			return printSaved(cmd, p, &out)
		}),
	}
	create.Flags().StringVar(&sqlText, "sql", "", "the query: one read-only statement (SELECT, WITH, VALUES or TABLE)")
	create.Flags().StringVar(&sqlFile, "sql-file", "", "read the query from this file (- for standard input)")
	create.Flags().BoolVar(&public, "public", false, "publish it at once: a URL anyone can fetch without a token (admins)")
	create.MarkFlagsOneRequired("sql", "sql-file")

	list := listCommand(o, "list", "List saved queries", true, "/saved-queries",
		[]string{"name", "public", "token_hint", "last_run_at", "last_error", "sql"},
		func(l *api.SavedQueryList) (rows [][]any) {
			for _, q := range l.SavedQueries {
				rows = append(rows, []any{q.Name, q.Public, q.TokenHint, q.LastRunAt, q.LastError, q.SQL})
			}
			return rows
		})

	var format string
	runCmd := &cobra.Command{
		Use: "run NAME [--format json|csv]", Short: "Run a saved query now; --format csv prints CSV, json the API's answer (default: a table)", Args: cobra.ExactArgs(1),
		RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
			wire := format
			if wire == "" || wire == "table" {
				wire = "json"
			}
			if wire != "json" && wire != "csv" {
				return fmt.Errorf("--format must be json or csv, not %q", format)
			}
			h, b, err := c.doRaw(cmd.Context(), "POST", orgPath+base+pathEscape(args[0])+"/run?format="+wire, nil)
			if err != nil {
				return err
			}
			if wire == "csv" {
				_, err := p.w.Write(b)
				if by := h.Get("Whdb-Truncated-By"); by != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "truncated (%s): add LIMIT or select fewer columns\n", by)
				}
				return err
			}
			var out api.SavedQueryResult
			if err := json.Unmarshal(b, &out); err != nil {
				return fmt.Errorf("unexpected answer from the server: %w", err)
			}
			if format == "json" || p.format == "json" {
				return p.json(&out)
			}
			if err := p.table(&out, out.Columns, out.Rows); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "(%d rows)\n", out.RowCount)
			if out.Truncated {
				fmt.Fprintf(cmd.ErrOrStderr(), "truncated (%s): add LIMIT or select fewer columns\n", out.TruncatedBy)
			}
			return nil
		}),
	}
	runCmd.Flags().StringVar(&format, "format", "", "json or csv (default: a table, or json with -o json)")

	del := deleteCommand(o, "delete NAME", "Delete a saved query and its public URL (admins)", true, "Deleting saved query ", base, deletedFields)

	action := func(use, short, suffix string) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: run(o, true, func(cmd *cobra.Command, args []string, c *client, p *printer, orgPath string) error {
				if suffix != "publish" {
					if err := o.confirm(cmd, "The current public URL of "+args[0]+" stops working", args[0]); err != nil {
						return err
					}
				}
				var out api.SavedQueryEnvelope
				if err := c.do(cmd.Context(), "POST", orgPath+base+pathEscape(args[0])+"/"+suffix, nil, &out); err != nil {
					return err
				}
				return printSaved(cmd, p, &out)
			}),
		}
	}
	publish := action("publish NAME", "Give a saved query a public URL, shown once (admins)", "publish")
	roll := action("roll-token NAME", "Replace a public query's URL: the old one stops working at once (admins)", "roll-token")
	unpublish := action("unpublish NAME", "Revoke a public query's URL (admins)", "unpublish")
	sq.AddCommand(create, list, runCmd, del, publish, roll, unpublish)
	return sq
}

// readInput reads a file, or standard input for "-".
func readInput(cmd *cobra.Command, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("error reading %s: %w", path, err)
	}
	return b, nil
}
