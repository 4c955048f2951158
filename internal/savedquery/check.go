package savedquery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Refusal is why a statement cannot be saved (or a name used): the API answers it as invalid input.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

// Check decides whether sql may be saved, in tx: a read-only transaction on the org's service login, under a
// statement timeout the caller set. Nothing of sql runs: Postgres parses it (one statement, its relations and
// columns must exist), describes it (a query returning rows, without parameters) and plans it (EXPLAIN without
// ANALYZE, which checks the login's privileges), and the plan must neither write nor lock rows. The statement
// must also start as a query does (SELECT, WITH, VALUES, TABLE), so a write gets a plain reason rather than
// the permission error the read-only login would get.
//
// Running it later is bounded the same way whatever got past this: the read-only transaction (rolled back),
// the login's SELECT-only privileges, the statement timeout and the row and byte caps.
func Check(ctx context.Context, tx pgx.Tx, sql string) error {
	if err := ValidateSQL(sql); err != nil {
		return err
	}
	switch kw := firstKeyword(sql); kw {
	case "select", "with", "values", "table":
	case "":
		return &Refusal{Reason: "no statement: only comments"}
	default:
		return &Refusal{Reason: fmt.Sprintf("only a read-only query (SELECT, WITH, VALUES or TABLE) can be saved; this statement is %s", strings.ToUpper(kw))}
	}
	// Parse and Describe only (the unnamed statement, extended protocol): a string of several statements is
	// refused by the server ("cannot insert multiple commands into a prepared statement").
	desc, err := tx.Conn().PgConn().Prepare(ctx, "", sql, nil)
	if err != nil {
		return refusal(err)
	}
	if len(desc.ParamOIDs) > 0 {
		return &Refusal{Reason: fmt.Sprintf("it takes %d parameter(s) ($1...): a saved query takes none", len(desc.ParamOIDs))}
	}
	if len(desc.Fields) == 0 {
		// SELECT INTO creates a table; such statements return no rows.
		return &Refusal{Reason: "it returns no rows (SELECT INTO and other statements that are not queries cannot be saved)"}
	}
	// sql is one statement starting as a query does, so it can follow EXPLAIN's options and nothing else.
	var plan []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+sql, pgx.QueryExecModeExec).Scan(&plan); err != nil {
		return refusal(err)
	}
	var tree any
	if err := json.Unmarshal(plan, &tree); err != nil {
		return fmt.Errorf("error reading the plan: %w", err)
	}
	if node := writingNode(tree); node != "" {
		return &Refusal{Reason: fmt.Sprintf("it writes or locks rows (its plan has a %s node): a saved query only reads", node)}
	}
	return nil
}

// refusal turns the server's refusal of a statement into a reason; other errors (the connection) stay errors.
func refusal(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case pgerrcode.QueryCanceled:
		return &Refusal{Reason: "it could not be planned within its timeout"}
	case pgerrcode.InsufficientPrivilege:
		return &Refusal{Reason: "the organization's read-only login may not run it: " + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"}
	case pgerrcode.ReadOnlySQLTransaction:
		return &Refusal{Reason: "it writes: " + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"}
	}
	return &Refusal{Reason: "it does not parse or plan on the organization's database: " + pgErr.Severity + ": " + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"}
}

// writingNode finds a node of an EXPLAIN (FORMAT JSON) plan that writes (ModifyTable: INSERT, UPDATE, DELETE,
// MERGE, also in a WITH) or locks rows (LockRows: FOR UPDATE/SHARE).
func writingNode(v any) string {
	switch t := v.(type) {
	case map[string]any:
		if n, _ := t["Node Type"].(string); n == "ModifyTable" || n == "LockRows" {
			return n
		}
		for _, c := range t {
			if n := writingNode(c); n != "" {
				return n
			}
		}
	case []any:
		for _, c := range t {
			if n := writingNode(c); n != "" {
				return n
			}
		}
	}
	return ""
}

// firstKeyword is the statement's first word, lower-case, past white space, comments (-- and nested /* */)
// and opening parentheses; "" when there is none.
func firstKeyword(sql string) string {
	i := 0
	for i < len(sql) {
		switch {
		case strings.IndexByte("( \t\n\r\f\v", sql[i]) >= 0: // Postgres' white space is ASCII
			i++
		case strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				return ""
			}
			i += end + 1
		case strings.HasPrefix(sql[i:], "/*"):
			depth := 0
		comment:
			for i < len(sql) {
				switch {
				case strings.HasPrefix(sql[i:], "/*"):
					depth++
					i += 2
				case strings.HasPrefix(sql[i:], "*/"):
					depth--
					i += 2
				default:
					i++
				}
				if depth == 0 {
					break comment
				}
			}
			if depth > 0 {
				return ""
			}
		default:
			j := i
			for j < len(sql) && (sql[j] == '_' || sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z') {
				j++
			}
			if j == i {
				return strings.ToLower(sql[i : i+1])
			}
			return strings.ToLower(sql[i:j])
		}
	}
	return ""
}
