package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/internal/savedquery"
)

// Saved queries: any member saves a private one and runs it; publishing (a URL anyone can fetch) and deleting
// need the admin role. Every run goes the path of db sql (inReadOnlyTx): the org's service login, a
// read-only transaction, the statement timeout bounded by the org's query limit, row and byte caps.

// SavedQuery is a saved query as the API shows it; TokenHint is the start of its public token.
type SavedQuery struct {
	Name        string     `json:"name"`
	SQL         string     `json:"sql"`
	Public      bool       `json:"public"`
	TokenHint   string     `json:"token_hint,omitempty"`
	PublishedAt *time.Time `json:"published_at,omitempty"`
	LastRunAt   *time.Time `json:"last_run_at,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
}

// SavedQueryList answers GET /orgs/{org}/saved-queries.
type SavedQueryList struct {
	SavedQueries []SavedQuery `json:"saved_queries"`
}

// SavedQueryEnvelope answers creating, publishing, rolling and unpublishing a saved query. PublicURL (with the
// token) is shown only when a token was just made: only its hash is stored.
type SavedQueryEnvelope struct {
	SavedQuery SavedQuery `json:"saved_query"`
	PublicURL  string     `json:"public_url,omitempty"`
}

// SavedQueryResult is the JSON body of a run and of a public fetch: db sql's answer, with the time the rows
// were read (a public result may come from the cache).
type SavedQueryResult struct {
	Columns     []string  `json:"columns"`
	Rows        [][]any   `json:"rows"`
	RowCount    int       `json:"row_count"`
	Truncated   bool      `json:"truncated"`
	TruncatedBy string    `json:"truncated_by,omitempty"`
	MaxRows     int       `json:"max_rows"`
	MaxBytes    int       `json:"max_bytes"`
	GeneratedAt time.Time `json:"generated_at"`
}

// savedQueryCheckTimeout bounds planning a statement when it is saved.
const savedQueryCheckTimeout = 10 * time.Second

func savedQueryView(q *savedquery.Query) SavedQuery {
	return SavedQuery{Name: q.Name, SQL: q.SQL, Public: q.Public(), TokenHint: q.TokenHint, PublishedAt: q.PublishedAt,
		LastRunAt: q.LastRunAt, LastError: q.LastError, CreatedAt: q.CreatedAt}
}

func (a *API) publicQueryURL(token string) string {
	return a.cfg.PublicURL + "/v1/public/queries/" + token
}

// savedQueryError maps the store's errors onto the API's.
func savedQueryError(err error, name string) error {
	var ref *savedquery.Refusal
	switch {
	case errors.Is(err, savedquery.ErrNotFound):
		return errNotFound("saved query " + name)
	case errors.Is(err, savedquery.ErrExists):
		return errConflict("a saved query named " + name + " exists already")
	case errors.Is(err, savedquery.ErrTooMany):
		return errConflict(err.Error() + ": delete one first")
	case errors.Is(err, savedquery.ErrPublic):
		return errConflict("saved query " + name + " is public already: `saved-query roll-token` replaces its URL")
	case errors.Is(err, savedquery.ErrPrivate):
		return errConflict("saved query " + name + " is not public: `saved-query publish` gives it a URL")
	case errors.As(err, &ref):
		return errInvalid("name", ref.Reason)
	}
	return err
}

func (a *API) listSavedQueries(w http.ResponseWriter, r *http.Request) error {
	qs, err := savedquery.List(r.Context(), a.pool, orgFrom(r).ID)
	if err != nil {
		return err
	}
	out := SavedQueryList{SavedQueries: []SavedQuery{}}
	for _, q := range qs {
		out.SavedQueries = append(out.SavedQueries, savedQueryView(q))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) createSavedQuery(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name   string `json:"name"`
		SQL    string `json:"sql"`
		Public bool   `json:"public"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	o := orgFrom(r)
	if in.Public && o.Role != roleAdmin {
		return errForbidden("publishing a query needs the admin role in " + o.Key)
	}
	if !savedquery.ValidName(in.Name) {
		return errInvalid("name", "use 1 to 63 characters: a lower-case letter, then lower-case letters, digits, _ or -")
	}
	if err := savedquery.ValidateSQL(in.SQL); err != nil {
		return errInvalid("sql", err.Error())
	}
	if _, err := savedquery.Get(r.Context(), a.pool, o.ID, in.Name); err == nil {
		return errConflict("a saved query named " + in.Name + " exists already")
	}
	timeout, err := a.orgTimeout(r.Context(), o.ID, min(a.cfg.SQLTimeout, savedQueryCheckTimeout))
	if err != nil {
		return err
	}
	err = a.inReadOnlyTx(r.Context(), o.ID, timeout, func(ctx context.Context, tx pgx.Tx) error {
		return savedquery.Check(ctx, tx, in.SQL)
	})
	var ref *savedquery.Refusal
	if errors.As(err, &ref) {
		return errInvalid("sql", ref.Reason)
	}
	if err != nil {
		return err
	}
	uid := userFrom(r).ID
	q, token, err := savedquery.Create(r.Context(), a.pool, o.ID, &uid, in.Name, in.SQL, in.Public)
	if err != nil {
		return savedQueryError(err, in.Name)
	}
	out := SavedQueryEnvelope{SavedQuery: savedQueryView(q)}
	if token != "" {
		out.PublicURL = a.publicQueryURL(token)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *API) deleteSavedQuery(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["name"]
	q, err := savedquery.Get(r.Context(), a.pool, orgFrom(r).ID, name)
	if err != nil {
		return savedQueryError(err, name)
	}
	if err := savedquery.Delete(r.Context(), a.pool, orgFrom(r).ID, name); err != nil {
		return savedQueryError(err, name)
	}
	a.forgetSavedQuery(q.ID)
	writeJSON(w, http.StatusOK, Deleted{Deleted: name})
	return nil
}

// publishSavedQuery makes a token: a first one (publish) or a new one whose URL replaces the old (roll-token).
func (a *API) publishSavedQuery(roll bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := mux.Vars(r)["name"]
		q, token, err := savedquery.Publish(r.Context(), a.pool, orgFrom(r).ID, name, roll)
		if err != nil {
			return savedQueryError(err, name)
		}
		writeJSON(w, http.StatusOK, SavedQueryEnvelope{SavedQuery: savedQueryView(q), PublicURL: a.publicQueryURL(token)})
		return nil
	}
}

func (a *API) unpublishSavedQuery(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["name"]
	q, err := savedquery.Unpublish(r.Context(), a.pool, orgFrom(r).ID, name)
	if err != nil {
		return savedQueryError(err, name)
	}
	a.forgetSavedQuery(q.ID)
	writeJSON(w, http.StatusOK, SavedQueryEnvelope{SavedQuery: savedQueryView(q)})
	return nil
}

func (a *API) forgetSavedQuery(id int64) {
	for _, f := range []savedquery.Format{savedquery.JSON, savedquery.CSV} {
		a.savedResults.Forget(savedResultKey(id, f))
	}
}

func savedResultKey(id int64, f savedquery.Format) string {
	return strconv.FormatInt(id, 10) + "/" + string(f)
}

// runSavedQuery runs a saved query now (never from the cache) as JSON or CSV (?format=), under db sql's caps.
func (a *API) runSavedQuery(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["name"]
	format, ok := savedquery.ParseFormat(r.URL.Query().Get("format"))
	if !ok {
		return errInvalid("format", "json or csv")
	}
	q, err := savedquery.Get(r.Context(), a.pool, orgFrom(r).ID, name)
	if err != nil {
		return savedQueryError(err, name)
	}
	timeout, err := a.orgTimeout(r.Context(), q.OrgID, a.cfg.SQLTimeout)
	if err != nil {
		return err
	}
	a.extendWriteDeadline(w, r, timeout)
	res, err := a.runSaved(r.Context(), q, format, savedquery.Limits{MaxRows: a.cfg.SQLRowLimit, MaxBytes: a.cfg.SQLByteLimit}, timeout)
	var qe *savedquery.QueryError
	if errors.As(err, &qe) {
		return &Error{Status: http.StatusBadRequest, Code: qe.Code, Message: "saved query " + name + " failed: " + qe.Message}
	}
	if err != nil {
		return err
	}
	writeResult(w, res, q.Name, 0)
	return nil
}

// runSaved runs q on the org's service login and records the run; the query's own failure is a QueryError.
func (a *API) runSaved(ctx context.Context, q *savedquery.Query, format savedquery.Format, lim savedquery.Limits, timeout time.Duration) (*savedquery.Result, error) {
	var res *savedquery.Result
	err := a.inReadOnlyTx(ctx, q.OrgID, timeout, func(ctx context.Context, tx pgx.Tx) error {
		// Extended protocol without a description (one statement, values as text), as db sql; past a cap
		// Collect cancels the query rather than read the rest.
		queryCtx, stop := context.WithCancel(ctx)
		defer stop()
		rows, err := tx.Query(queryCtx, q.SQL, pgx.QueryExecModeExec)
		if err != nil {
			return err
		}
		res, err = savedquery.Collect(rows, format, lim, stop)
		return err
	})
	err = queryError(err)
	failure := ""
	var qe *savedquery.QueryError
	if errors.As(err, &qe) {
		failure = qe.Message
	}
	if err == nil || qe != nil {
		if rerr := savedquery.RecordRun(context.WithoutCancel(ctx), a.pool, q.ID, failure); rerr != nil {
			a.logger.WarnContext(ctx, "cannot record a saved query's run", "error", rerr.Error())
		}
	}
	return res, err
}

// queryError turns what the database said about the query (an error, a timeout) into a QueryError; errors of
// reaching the database stay as they are.
func queryError(err error) error {
	if err == nil {
		return nil
	}
	var apiErr *Error
	var pgErr *pgconn.PgError
	if !errors.As(err, &apiErr) {
		if !errors.As(err, &pgErr) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		errors.As(sqlError(err), &apiErr)
	}
	if apiErr.Code != "sql_error" && apiErr.Code != "sql_timeout" {
		return err
	}
	qe := &savedquery.QueryError{Code: apiErr.Code, Message: apiErr.Message}
	if pgErr != nil || errors.As(err, &pgErr) {
		qe.SQLState = pgErr.Code
	}
	return qe
}

// writeResult writes a result with what tells a reader about it: whether a cap cut it and how old it is.
func writeResult(w http.ResponseWriter, res *savedquery.Result, name string, age time.Duration) {
	h := w.Header()
	h.Set("Content-Type", res.ContentType())
	// The rows are the org's data, some of it sent by third parties: never rendered as a page.
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	if res.Format == savedquery.CSV {
		h.Set("Content-Disposition", `inline; filename="`+name+`.csv"`)
	}
	h.Set("Whdb-Row-Count", strconv.Itoa(res.RowCount()))
	if res.TruncatedBy != "" {
		h.Set("Whdb-Truncated-By", res.TruncatedBy)
	}
	h.Set("Age", strconv.Itoa(int(age/time.Second)))
	w.WriteHeader(http.StatusOK)
	_, _ = res.WriteTo(w)
}

// publicSavedQuery serves a public query to anyone holding its token, without authentication: rate limited per
// client, capped in rows and bytes, from the cache while its result is fresh. An unknown, rolled or revoked
// token, and a deleted query or org, are 404.
func (a *API) publicSavedQuery(w http.ResponseWriter, r *http.Request) error {
	err := a.servePublicSavedQuery(w, r)
	var apiErr *Error
	if err != nil && !errors.As(err, &apiErr) {
		// wrap would log the path, which holds the token: log without it.
		a.logger.ErrorContext(r.Context(), "public saved query failed", "error", err.Error())
		return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
	}
	return err
}

func (a *API) servePublicSavedQuery(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if ok, wait := a.publicQueries.Allow(a.cfg.ClientKey(r), time.Now()); !ok {
		return errRateLimited("too many requests for public queries from this client", wait)
	}
	format, ok := savedquery.ParseFormat(r.URL.Query().Get("format"))
	if !ok {
		return errInvalid("format", "json or csv")
	}
	q, err := savedquery.ByToken(r.Context(), a.pool, mux.Vars(r)["token"])
	if errors.Is(err, savedquery.ErrNotFound) {
		return errNotFound("query")
	}
	if err != nil {
		return err
	}
	lim := savedquery.Limits{MaxRows: a.cfg.PublicQueryMaxRows, MaxBytes: a.cfg.PublicQueryMaxBytes}
	res, age, err := a.savedResults.Get(r.Context(), savedResultKey(q.ID, format), func(ctx context.Context) (*savedquery.Result, error) {
		// Anonymous fetches must not take the org's service login (whose connections db sql needs too) nor
		// this server's goroutines without bound: a few runs per org at once, the rest come back later.
		release, ok := a.publicRuns.acquire(q.OrgID)
		if !ok {
			return nil, &Error{Status: http.StatusServiceUnavailable, Code: "busy", RetryAfter: time.Second,
				Message: "this organization's public queries are busy; try again in a second"}
		}
		defer release()
		timeout, err := a.orgTimeout(ctx, q.OrgID, a.cfg.PublicQueryTimeout)
		if err != nil {
			return nil, err
		}
		// The run has no caller to hang up on it (it is shared): connecting is bounded too.
		ctx, cancel := context.WithTimeout(ctx, timeout+publicConnectTimeout)
		defer cancel()
		return a.runSaved(ctx, q, format, lim, timeout)
	})
	var qe *savedquery.QueryError
	if errors.As(err, &qe) {
		// The database's message may quote the org's data: the public gets the kind of failure only.
		msg := "the query failed"
		if qe.Code == "sql_timeout" {
			msg = "the query ran past its timeout"
		} else if qe.SQLState != "" {
			msg += " (SQLSTATE " + qe.SQLState + ")"
		}
		return &Error{Status: http.StatusBadRequest, Code: qe.Code, Message: msg + "; its organization sees why with `webhookdb saved-query run`"}
	}
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "private, max-age="+strconv.Itoa(int(max(a.cfg.SavedQueryCacheTTL-age, 0)/time.Second)))
	writeResult(w, res, q.Name, age)
	return nil
}

// publicConnectTimeout bounds connecting to the org's database for a public run.
const publicConnectTimeout = 15 * time.Second

// orgSlots bounds what runs at once per org.
type orgSlots struct {
	max  int
	mu   sync.Mutex
	used map[int64]int
}

func newOrgSlots(max int) *orgSlots { return &orgSlots{max: max, used: map[int64]int{}} }

// acquire takes one of the org's slots, if one is free.
func (s *orgSlots) acquire(orgID int64) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used[orgID] >= s.max {
		return nil, false
	}
	s.used[orgID]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.used[orgID]--; s.used[orgID] == 0 {
			delete(s.used, orgID)
		}
	}, true
}

// publicRoutes are served without authentication, with their full paths.
func (a *API) publicRoutes() []route {
	return []route{
		{"GET", "/v1/public/queries/{token}", a.publicSavedQuery},
	}
}

func (c Config) savedQueryDefaults() Config {
	if c.SavedQueryCacheTTL == 0 {
		c.SavedQueryCacheTTL = 30 * time.Second
	}
	if c.SavedQueryCacheBytes == 0 {
		c.SavedQueryCacheBytes = 64 << 20
	}
	if c.PublicQueryMaxRows == 0 {
		c.PublicQueryMaxRows = 1000
	}
	if c.PublicQueryMaxBytes == 0 {
		c.PublicQueryMaxBytes = 1 << 20
	}
	if c.PublicQueryTimeout == 0 {
		c.PublicQueryTimeout = 10 * time.Second
	}
	if c.PublicQueryEvery == 0 {
		c.PublicQueryEvery = time.Second
	}
	if c.PublicQueryBurst == 0 {
		c.PublicQueryBurst = 20
	}
	if c.PublicQueryConcurrency == 0 {
		c.PublicQueryConcurrency = 2
	}
	return c
}
