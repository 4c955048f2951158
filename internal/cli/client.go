package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/api"
)

// clientConfig is what `auth login` and `org use` remember, in $XDG_CONFIG_HOME/webhookdb/config.json (0600).
type clientConfig struct {
	APIURL string `json:"api_url,omitempty"`
	Token  string `json:"token,omitempty"`
	Org    string `json:"org,omitempty"`
}

func configPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("error finding the config directory: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "webhookdb", "config.json"), nil
}

func loadClientConfig() (*clientConfig, error) {
	cfg := &clientConfig{}
	path, err := configPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("error reading %s: %w", path, err)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, cfg); err != nil {
			return nil, fmt.Errorf("error reading %s: %w", path, err)
		}
	}
	return cfg, nil
}

func (c *clientConfig) save() error {
	path, err := configPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("error creating %s: %w", filepath.Dir(path), err)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("error writing %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// client talks to the management API.
type client struct {
	baseURL string
	token   string
	http    *http.Client
}

// clientOptions are the flags every client command shares.
type clientOptions struct {
	org    string
	output string
	yes    bool
}

func (o *clientOptions) client() (*client, *clientConfig, error) {
	cfg, err := loadClientConfig()
	if err != nil {
		return nil, nil, err
	}
	c := &client{baseURL: envOr("WEBHOOKDB_API_URL", cfg.APIURL), token: envOr("WEBHOOKDB_TOKEN", cfg.Token), http: &http.Client{Timeout: clientTimeout}}
	if c.baseURL == "" || c.token == "" {
		return nil, nil, errors.New("not logged in: run `webhookdb auth login --url URL --token TOKEN`, or set WEBHOOKDB_API_URL and WEBHOOKDB_TOKEN")
	}
	c.baseURL = strings.TrimRight(c.baseURL, "/")
	return c, cfg, nil
}

// orgKey is --org, else the org chosen with `org use`.
func (o *clientOptions) orgKey(cfg *clientConfig) (string, error) {
	if o.org != "" {
		return o.org, nil
	}
	if v := os.Getenv("WEBHOOKDB_ORG"); v != "" {
		return v, nil
	}
	if cfg.Org == "" {
		return "", errors.New("no organization chosen: pass --org KEY or run `webhookdb org use KEY`")
	}
	return cfg.Org, nil
}

// clientTimeout bounds one API call; `db sql` allows more when its query may run longer.
const clientTimeout = 5 * time.Minute

// apiError is an error answer of the API (api.Error) with its HTTP status.
type apiError struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("the server answered %d", e.Status)
	}
	return e.Message
}

// do calls the API and decodes its answer into out (one of the api package's response types). The request is
// bound to ctx, so interrupting the command cancels it.
func (c *client) do(ctx context.Context, method, path string, body any, out any) error {
	_, b, err := c.doRaw(ctx, method, path, body)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("unexpected answer from the server: %w", err)
		}
	}
	return nil
}

// doRaw calls the API and returns its answer's headers and body as they are (an error answer as an error).
func (c *client) doRaw(ctx context.Context, method, path string, body any) (http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("error building request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("error calling webhookdb: %w", context.Cause(ctx))
		}
		return nil, nil, fmt.Errorf("cannot reach webhookdb at %s: %w", c.baseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("error reading the answer: %w", err)
	}
	if resp.StatusCode >= 400 {
		var env api.ErrorEnvelope
		_ = json.Unmarshal(b, &env)
		e := &apiError{Status: resp.StatusCode}
		if env.Error != nil {
			e.Code, e.Message, e.Field = env.Error.Code, env.Error.Message, env.Error.Field
		}
		return nil, nil, e
	}
	return resp.Header, b, nil
}

func pathEscape(s string) string { return url.PathEscape(s) }

// printer renders results as aligned tables or as stable JSON (the API's own field names).
type printer struct {
	w      io.Writer
	format string
}

func (o *clientOptions) printer(cmd *cobra.Command) (*printer, error) {
	if o.output != "table" && o.output != "json" {
		return nil, fmt.Errorf("--output must be table or json, not %q", o.output)
	}
	return &printer{w: cmd.OutOrStdout(), format: o.output}, nil
}

// json prints v as indented JSON.
func (p *printer) json(v any) error {
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under the given column names, or jsonValue in json mode.
func (p *printer) table(jsonValue any, columns []string, rows [][]any) error {
	if p.format == "json" {
		return p.json(jsonValue)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(p.w, "(none)")
		return err
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(columns, "\t")))
	for _, r := range rows {
		cells := make([]string, len(columns))
		for i := range columns {
			var v any
			if i < len(r) {
				v = r[i]
			}
			cells[i] = cell(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// field is one line of a record.
type field struct {
	name  string
	value any
}

// record prints one object as "name  value" lines, or jsonValue in json mode.
func (p *printer) record(jsonValue any, fields ...field) error {
	if p.format == "json" {
		return p.json(jsonValue)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s\t%s\n", f.name, cell(f.value))
	}
	return tw.Flush()
}

// cell renders one value of an answer; absent values (nil, empty, zero times) show as "-".
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return strings.ReplaceAll(x, "\n", " ")
	case *string:
		if x == nil {
			return "-"
		}
		return cell(*x)
	case time.Time:
		if x.IsZero() {
			return "-"
		}
		return x.Format(time.RFC3339Nano) // as the API wrote it
	case *time.Time:
		if x == nil {
			return "-"
		}
		return cell(*x)
	case *int64:
		if x == nil {
			return "-"
		}
		return strconv.FormatInt(*x, 10)
	case *bool:
		if x == nil {
			return "-"
		}
		return strconv.FormatBool(*x)
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprintf("%d", int64(x))
		}
		return fmt.Sprint(x)
	case json.RawMessage:
		var buf bytes.Buffer
		if len(x) == 0 || string(x) == "null" || json.Compact(&buf, x) != nil {
			return "-"
		}
		return buf.String()
	default:
		// numbers, booleans, objects and arrays as their JSON
		b, err := json.Marshal(x)
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// confirm asks on a terminal before a destructive action; without a terminal it needs --yes.
func (o *clientOptions) confirm(cmd *cobra.Command, what, typed string) error {
	if o.yes {
		return nil
	}
	if !isTerminal(os.Stdin) {
		return fmt.Errorf("%s is destructive: pass --yes to confirm", what)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s. Type %q to confirm: ", what, typed)
	line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if strings.TrimSpace(line) != typed {
		return errors.New("not confirmed; nothing was changed")
	}
	return nil
}
