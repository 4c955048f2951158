package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/internal/savedquery"
)

func (a *API) dbConnection(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Credentials == nil {
		return errUnavailable("this server issues no database credentials")
	}
	c, err := a.cfg.Credentials.Connection(r.Context(), orgFrom(r).ID, userFrom(r).ID)
	if err != nil {
		return wrapf(err, "error issuing credentials")
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// rollCredentials replaces the caller's own login; ?all=true (admins) every login of the org.
func (a *API) rollCredentials(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Credentials == nil {
		return errUnavailable("this server issues no database credentials")
	}
	all := false
	switch v := r.URL.Query().Get("all"); v {
	case "", "false":
	case "true":
		all = true
	default:
		return errInvalid("all", "true or false")
	}
	if all && orgFrom(r).Role != roleAdmin {
		return errForbidden("rolling every member's credentials needs the admin role in " + orgFrom(r).Key)
	}
	c, err := a.cfg.Credentials.RollCredentials(r.Context(), orgFrom(r).ID, userFrom(r).ID, all)
	if err != nil {
		return wrapf(err, "error rolling credentials")
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// readOnlyConn connects with the server's own read-only login for the org: `db sql` can do exactly what a
// member's connection string can, nothing more, and no member can lock it out (it is nobody's login).
func (a *API) readOnlyConn(ctx context.Context, orgID int64) (*pgx.Conn, error) {
	if a.cfg.Credentials == nil {
		return nil, errUnavailable("this server issues no database credentials")
	}
	c, err := a.cfg.Credentials.ServiceConnection(ctx, orgID)
	if err != nil {
		return nil, wrapf(err, "error issuing credentials")
	}
	cfg, err := ReadOnlyConnConfig(c)
	if err != nil {
		return nil, wrapf(err, "error parsing the organization's connection URL")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, wrapf(err, "error connecting to the organization's database")
	}
	return conn, nil
}

// ReadOnlyConnConfig parses a read-only credential's URL; with a CA certificate (sslmode verify-ca or
// verify-full), the server is verified against that CA rather than the system's roots.
func ReadOnlyConnConfig(c *Credential) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(c.URL)
	if err != nil {
		return nil, errors.New("the connection URL does not parse") // never echo it: it holds a password
	}
	if c.CACert == "" {
		return cfg, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CACert)) {
		return nil, errors.New("the server's CA certificate does not parse")
	}
	for _, tc := range append([]*tls.Config{cfg.TLSConfig}, fallbackTLS(cfg)...) {
		if tc != nil {
			tc.RootCAs = pool
		}
	}
	return cfg, nil
}

func fallbackTLS(cfg *pgx.ConnConfig) []*tls.Config {
	out := make([]*tls.Config, 0, len(cfg.Fallbacks))
	for _, f := range cfg.Fallbacks {
		out = append(out, f.TLSConfig)
	}
	return out
}

func (a *API) dbSQL(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Query   string `json:"query"`
		MaxRows int    `json:"max_rows"`
		Timeout string `json:"timeout"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if strings.TrimSpace(in.Query) == "" {
		return errInvalid("query", "required")
	}
	limit := a.cfg.SQLRowLimit
	if in.MaxRows > 0 {
		limit = min(in.MaxRows, 10*a.cfg.SQLRowLimit)
	}
	byteLimit := a.cfg.SQLByteLimit
	timeout := a.cfg.SQLTimeout
	if in.Timeout != "" {
		d, err := time.ParseDuration(in.Timeout)
		if err != nil || d <= 0 || d > 5*time.Minute {
			return errInvalid("timeout", "a duration up to 5m")
		}
		timeout = d
	}
	timeout, err := a.orgTimeout(r.Context(), orgFrom(r).ID, timeout)
	if err != nil {
		return err
	}
	rc := a.extendWriteDeadline(w, r, timeout)
	return a.inReadOnlyTx(r.Context(), orgFrom(r).ID, timeout, func(ctx context.Context, tx pgx.Tx) error {
		return streamSQL(ctx, w, rc, tx, in.Query, limit, byteLimit)
	})
}

// extendWriteDeadline gives a request that runs a query its timeout on top of the usual budget: the server's
// write timeout (60 s for every request) would cut the answer of a longer query. The read timeout needs no
// change: the body is read, and net/http stops applying it to the connection then.
func (a *API) extendWriteDeadline(w http.ResponseWriter, r *http.Request, timeout time.Duration) *http.ResponseController {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Now().Add(timeout + sqlDeadlineMargin)); err != nil {
		// A ResponseWriter wrapper without Unwrap hides the connection: the query still runs, but an answer
		// after the server's write timeout is lost.
		a.logger.WarnContext(r.Context(), "cannot extend the write deadline of a query's request", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	}
	return rc
}

// orgTimeout bounds a query's timeout by the org's query limit, which the maintenance pass enforces on its
// read-only logins.
func (a *API) orgTimeout(ctx context.Context, orgID int64, timeout time.Duration) (time.Duration, error) {
	var orgLimit time.Duration
	if err := a.pool.QueryRow(ctx, `SELECT query_limit FROM organizations WHERE id = $1`, orgID).Scan(&orgLimit); err != nil {
		return 0, wrapf(err, "error reading the organization's query limit")
	}
	if orgLimit > 0 && timeout > orgLimit {
		timeout = orgLimit
	}
	return timeout, nil
}

// inReadOnlyTx runs f on a new connection of the org's service login, in a read-only transaction whose
// statement timeout the server sets, whatever the login's own settings say (any login may turn its timeouts
// off); ctx's deadline (timeout) backs it up. The transaction is rolled back. This is the one path of member
// SQL: db sql and saved queries.
func (a *API) inReadOnlyTx(ctx context.Context, orgID int64, timeout time.Duration, f func(ctx context.Context, tx pgx.Tx) error) error {
	// The timeout is the query's: connecting (a login, on a busy server) does not eat into it.
	conn, err := a.readOnlyConn(ctx, orgID)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return sqlError(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only: nothing to keep
	if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = "+strconv.FormatInt(max(timeout.Milliseconds(), 1), 10)); err != nil {
		return sqlError(err)
	}
	return f(ctx, tx)
}

// streamSQL runs query in tx and streams its answer: columns first, then rows as they arrive, then the summary.
func streamSQL(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, tx pgx.Tx, query string, limit, byteLimit int) error {
	// Extended protocol (one Parse of an unnamed statement, results as text): the server refuses a query
	// string holding several statements ("cannot insert multiple commands into a prepared statement"), so
	// exactly one runs, inside the transaction. Never the simple protocol, which would run them all.
	// Past a cap the rest of the result is not drained: cancelling the query's context cancels it on the
	// server (the connection is closed afterwards anyway).
	queryCtx, stopQuery := context.WithCancel(ctx)
	defer stopQuery()
	rows, err := tx.Query(queryCtx, query, pgx.QueryExecModeExec)
	if err != nil {
		return sqlError(err)
	}
	defer rows.Close()

	// Stream: columns first, then rows as they arrive, then the summary.
	bw := bufio.NewWriter(w)
	started := false
	start := func() {
		started = true
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		cols := make([]string, 0, len(rows.FieldDescriptions()))
		for _, f := range rows.FieldDescriptions() {
			cols = append(cols, f.Name)
		}
		b, _ := json.Marshal(cols)
		bw.WriteString(`{"columns":`)
		bw.Write(b)
		bw.WriteString(`,"rows":[`)
	}
	n, size, truncatedBy := 0, 0, ""
	for rows.Next() {
		if !started {
			start()
		}
		if n == limit {
			truncatedBy = "max_rows"
			break
		}
		vals, err := rows.Values()
		if err != nil {
			break
		}
		b := savedquery.JSONRow(vals)
		if size+len(b)+1 > byteLimit {
			truncatedBy = "max_bytes"
			break
		}
		size += len(b) + 1
		if n > 0 {
			bw.WriteByte(',')
		}
		bw.Write(b)
		n++
		if n%200 == 0 {
			bw.Flush()
			_ = rc.Flush()
		}
	}
	truncated := truncatedBy != ""
	if truncated {
		stopQuery()
	}
	rows.Close()
	if err := rows.Err(); err != nil && !truncated {
		if !started {
			return sqlError(err)
		}
		// Rows were sent already: report the error in the body.
		msg, _ := json.Marshal(sqlError(err).Error())
		bw.WriteString(`],"error":`)
		bw.Write(msg)
		bw.WriteString(`,"row_count":`)
		bw.WriteString(jsonInt(n))
		bw.WriteString("}\n")
		return bw.Flush()
	}
	if !started {
		start()
	}
	bw.WriteString(`],"row_count":`)
	bw.WriteString(jsonInt(n))
	bw.WriteString(`,"truncated":`)
	if truncated {
		bw.WriteString("true")
	} else {
		bw.WriteString("false")
	}
	if truncated {
		bw.WriteString(`,"truncated_by":"` + truncatedBy + `"`)
	}
	bw.WriteString(`,"max_rows":`)
	bw.WriteString(jsonInt(limit))
	bw.WriteString(`,"max_bytes":`)
	bw.WriteString(jsonInt(byteLimit))
	bw.WriteString("}\n")
	return bw.Flush()
}

// sqlDeadlineMargin is how long a db sql request may take beyond its query's timeout: as long as the server
// gives any request.
const sqlDeadlineMargin = time.Minute

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }

// sqlError passes the database's own message back: it is the user's query and the user's data.
func sqlError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.QueryCanceled {
		return &Error{Status: http.StatusBadRequest, Code: "sql_timeout", Message: "the query ran past its timeout (" + pgErr.Message + ")"}
	}
	if errors.As(err, &pgErr) {
		return &Error{Status: http.StatusBadRequest, Code: "sql_error", Message: pgErr.Severity + ": " + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Status: http.StatusBadRequest, Code: "sql_timeout", Message: "the query ran past its timeout"}
	}
	return &Error{Status: http.StatusBadRequest, Code: "sql_error", Message: err.Error()}
}

func (a *API) dbTables(w http.ResponseWriter, r *http.Request) error {
	conn, err := a.readOnlyConn(r.Context(), orgFrom(r).ID)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(r.Context()))
	rows, err := conn.Query(r.Context(), `
		SELECT c.relname, c.reltuples::bigint
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND has_table_privilege(c.oid, 'SELECT')
		ORDER BY c.relname`)
	if err != nil {
		return sqlError(err)
	}
	tables, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Table, error) {
		var t Table
		return t, row.Scan(&t.Name, &t.EstimateRows)
	})
	if err != nil {
		return sqlError(err)
	}
	if tables == nil {
		tables = []Table{}
	}
	writeJSON(w, http.StatusOK, TableList{Tables: tables})
	return nil
}
