package secrets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sealed is a ciphertext with its binding.
type Sealed struct {
	Binding    Binding
	Ciphertext string
}

// Rotator is a Box whose ciphertexts can be re-encrypted under its current key version.
type Rotator interface {
	Box
	// Owns reports whether a ciphertext was made by this box (by its prefix).
	Owns(ciphertext string) bool
	// KeyVersion reports which key version sealed one of its ciphertexts.
	KeyVersion(ciphertext string) (int, error)
	// CurrentVersion is the version new ciphertexts use.
	CurrentVersion(ctx context.Context) (int, error)
	// Rewrap re-encrypts ciphertexts under the current version, in order.
	Rewrap(ctx context.Context, items []Sealed) ([]string, error)
}

// KeyRotator is a Rotator that manages its own key versions (transit). The local keyring is not one: its
// operator adds a version to the keyring configuration, and removes old ones.
type KeyRotator interface {
	Rotator
	// RotateKey makes a new version current and returns it.
	RotateKey(ctx context.Context) (int, error)
	// SetMinDecryptionVersion stops older versions from decrypting.
	SetMinDecryptionVersion(ctx context.Context, v int) error
}

var (
	_ KeyRotator = (*Transit)(nil)
	_ Rotator    = (*Keyring)(nil)
	_ Rotator    = (*Fallback)(nil)
)

// Owns reports whether a ciphertext was made by a keyring.
func (k *Keyring) Owns(ciphertext string) bool { return strings.HasPrefix(ciphertext, keyringPrefix) }

// CurrentVersion implements Rotator.
func (k *Keyring) CurrentVersion(context.Context) (int, error) { return k.current, nil }

// Rewrap implements Rotator: decrypt and encrypt again under the current key (locally; nothing leaves the
// process).
func (k *Keyring) Rewrap(ctx context.Context, items []Sealed) ([]string, error) {
	out := make([]string, len(items))
	for i, it := range items {
		plain, err := k.Decrypt(ctx, it.Binding, it.Ciphertext)
		if err != nil {
			return nil, fmt.Errorf("rewrapping %s: %w", it.Binding, err)
		}
		if out[i], err = k.Encrypt(ctx, it.Binding, plain); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Fallback encrypts with its primary box and decrypts each ciphertext with the box that made it, told by
// prefix. Moving from the local keyring to transit (or back) keeps existing values readable; Rotate then
// re-encrypts them all under the primary.
type Fallback struct {
	Primary Rotator
	Others  []Rotator
}

// WithFallback returns a Fallback box.
func WithFallback(primary Rotator, others ...Rotator) *Fallback {
	return &Fallback{Primary: primary, Others: others}
}

func (f *Fallback) boxFor(ciphertext string) Rotator {
	if f.Primary.Owns(ciphertext) {
		return f.Primary
	}
	for _, o := range f.Others {
		if o.Owns(ciphertext) {
			return o
		}
	}
	return f.Primary
}

// Encrypt implements Box with the primary.
func (f *Fallback) Encrypt(ctx context.Context, b Binding, plaintext []byte) (string, error) {
	return f.Primary.Encrypt(ctx, b, plaintext)
}

// Decrypt implements Box with whichever box made the ciphertext.
func (f *Fallback) Decrypt(ctx context.Context, b Binding, ciphertext string) ([]byte, error) {
	return f.boxFor(ciphertext).Decrypt(ctx, b, ciphertext)
}

// Owns implements Rotator: only the primary's ciphertexts count as current.
func (f *Fallback) Owns(ciphertext string) bool { return f.Primary.Owns(ciphertext) }

// KeyVersion implements Rotator.
func (f *Fallback) KeyVersion(ciphertext string) (int, error) {
	return f.Primary.KeyVersion(ciphertext)
}

// CurrentVersion implements Rotator.
func (f *Fallback) CurrentVersion(ctx context.Context) (int, error) {
	return f.Primary.CurrentVersion(ctx)
}

// Rewrap implements Rotator: the primary's ciphertexts are rewrapped by it, the others' decrypted by their
// box and encrypted by the primary.
func (f *Fallback) Rewrap(ctx context.Context, items []Sealed) ([]string, error) {
	out := make([]string, len(items))
	var own []Sealed
	var ownIdx []int
	for i, it := range items {
		if f.Primary.Owns(it.Ciphertext) {
			own = append(own, it)
			ownIdx = append(ownIdx, i)
			continue
		}
		plain, err := f.boxFor(it.Ciphertext).Decrypt(ctx, it.Binding, it.Ciphertext)
		if err != nil {
			return nil, fmt.Errorf("rewrapping %s: %w", it.Binding, err)
		}
		if out[i], err = f.Primary.Encrypt(ctx, it.Binding, plain); err != nil {
			return nil, err
		}
	}
	rewrapped, err := f.Primary.Rewrap(ctx, own)
	if err != nil {
		return nil, err
	}
	for j, i := range ownIdx {
		out[i] = rewrapped[j]
	}
	return out, nil
}

// EncryptedColumn is a column of ciphertexts; RowKey is the column whose value is the binding's Row.
type EncryptedColumn struct {
	Table  string
	Column string
	RowKey string
}

var (
	columnsMu sync.Mutex
	columns   = []EncryptedColumn{
		{Table: "database_servers", Column: "admin_url_enc", RowKey: "name"},
		{Table: "service_integrations", Column: "secret_enc", RowKey: "opaque_id"},
		{Table: "service_integrations", Column: "previous_secret_enc", RowKey: "opaque_id"},
		{Table: "org_credentials", Column: "url_enc", RowKey: "id"},
		{Table: "server_writer_credentials", Column: "password_enc", RowKey: "server_id"},
		{Table: "backfill_credentials", Column: "key_enc", RowKey: "integration_id"},
		{Table: "backfill_credentials", Column: "secret_enc", RowKey: "integration_id"},
		// issue 14: subscriptions' and alert handlers' signing secrets
		{Table: "subscriptions", Column: "secret_enc", RowKey: "opaque_id"},
		{Table: "subscriptions", Column: "previous_secret_enc", RowKey: "opaque_id"},
		{Table: "alert_handlers", Column: "secret_enc", RowKey: "opaque_id"},
	}
)

// RegisterColumn declares another encrypted column (in package init). Rotate refuses to run while the
// database has a column ending in _enc that is not declared, since raising the minimum decryption version
// would make its values unreadable.
func RegisterColumn(c EncryptedColumn) {
	columnsMu.Lock()
	defer columnsMu.Unlock()
	if !slices.Contains(columns, c) {
		columns = append(columns, c)
	}
}

// EncryptedColumns lists the declared encrypted columns.
func EncryptedColumns() []EncryptedColumn {
	columnsMu.Lock()
	defer columnsMu.Unlock()
	return slices.Clone(columns)
}

// ErrUndeclaredColumn means the database has an encrypted column Rotate does not know how to rewrap.
var ErrUndeclaredColumn = errors.New("encrypted column not declared with secrets.RegisterColumn")

// ErrRotationIncomplete means ciphertexts under older key versions remain after rewrapping.
var ErrRotationIncomplete = errors.New("ciphertexts under older key versions remain")

// DB is what Rotate needs of a connection or pool.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// RotateOptions tune Rotate.
type RotateOptions struct {
	// RotateKey rotates the key first (a KeyRotator: transit). Without it, values are rewrapped to the
	// current version (the keyring's highest, or transit's latest).
	RotateKey bool
	// BatchSize is how many values are rewrapped per round trip; default 100.
	BatchSize int
	// Progress, when set, receives a line per column.
	Progress io.Writer
}

// ColumnReport counts one column's values.
type ColumnReport struct {
	Table, Column string
	Values        int // non-null values seen
	Rewrapped     int // values re-encrypted
}

// RotateReport says what Rotate did.
type RotateReport struct {
	Version int // every value is now under this key version
	Columns []ColumnReport
	// MinDecryptionVersion is what the key's minimum decryption version was raised to (KeyRotator), else 0.
	MinDecryptionVersion int
}

// Rotate re-encrypts every encrypted value in the database under the box's current key version, in batches
// (optionally rotating the key first), checks that no value is left under an older version or another box,
// and then, for a KeyRotator, raises the key's minimum decryption version so older versions stop working.
// A value changed concurrently is left alone (its writer used the current version). Safe to run again.
func Rotate(ctx context.Context, db DB, box Rotator, opts RotateOptions) (*RotateReport, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 100
	}
	cols, err := presentColumns(ctx, db)
	if err != nil {
		return nil, err
	}
	kr, isKeyRotator := box.(KeyRotator)
	if f, ok := box.(*Fallback); ok {
		// The primary's key is the one rotated; the others' values are moved under it.
		kr, isKeyRotator = f.Primary.(KeyRotator)
	}
	if opts.RotateKey {
		if !isKeyRotator {
			return nil, errors.New("this key cannot be rotated by webhookdb: add a new version to the keyring (webhookdb keys generate) and run keys rotate again")
		}
		if _, err := kr.RotateKey(ctx); err != nil {
			return nil, err
		}
	}
	version, err := box.CurrentVersion(ctx)
	if err != nil {
		return nil, err
	}
	report := &RotateReport{Version: version}
	for _, c := range cols {
		cr, err := rewrapColumn(ctx, db, box, c, version, opts.BatchSize)
		if err != nil {
			return report, err
		}
		report.Columns = append(report.Columns, cr)
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "%s.%s: %d values, %d re-encrypted\n", c.Table, c.Column, cr.Values, cr.Rewrapped)
		}
	}
	// Verify before making old versions useless: a value written under an old version during the pass (or
	// missed) would become unreadable.
	for _, c := range cols {
		n, err := countStale(ctx, db, box, c, version)
		if err != nil {
			return report, err
		}
		if n > 0 {
			return report, fmt.Errorf("%w: %d in %s.%s (run keys rotate again)", ErrRotationIncomplete, n, c.Table, c.Column)
		}
	}
	if isKeyRotator {
		if err := kr.SetMinDecryptionVersion(ctx, version); err != nil {
			return report, err
		}
		report.MinDecryptionVersion = version
	}
	return report, nil
}

// presentColumns returns the declared columns that exist in the database, and fails if the database has an
// undeclared *_enc column.
func presentColumns(ctx context.Context, db DB) ([]EncryptedColumn, error) {
	rows, err := db.Query(ctx, `
		SELECT table_name::text, column_name::text FROM information_schema.columns
		WHERE table_schema = current_schema() AND column_name LIKE '%\_enc' ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("error listing encrypted columns: %w", err)
	}
	type tc struct{ t, c string }
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tc, error) {
		var x tc
		err := r.Scan(&x.t, &x.c)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("error listing encrypted columns: %w", err)
	}
	declared := EncryptedColumns()
	var out []EncryptedColumn
	var undeclared []string
	for _, f := range found {
		i := slices.IndexFunc(declared, func(d EncryptedColumn) bool { return d.Table == f.t && d.Column == f.c })
		if i < 0 {
			undeclared = append(undeclared, f.t+"."+f.c)
			continue
		}
		out = append(out, declared[i])
	}
	if len(undeclared) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrUndeclaredColumn, strings.Join(undeclared, ", "))
	}
	return out, nil
}

func (c EncryptedColumn) binding(row string) Binding {
	return Binding{Table: c.Table, Column: c.Column, Row: row}
}

func needsRewrap(box Rotator, ct string, version int) bool {
	if !box.Owns(ct) {
		return true
	}
	v, err := box.KeyVersion(ct)
	return err != nil || v < version
}

func rewrapColumn(ctx context.Context, db DB, box Rotator, c EncryptedColumn, version, batchSize int) (ColumnReport, error) {
	cr := ColumnReport{Table: c.Table, Column: c.Column}
	table, col, key := pgx.Identifier{c.Table}.Sanitize(), pgx.Identifier{c.Column}.Sanitize(), pgx.Identifier{c.RowKey}.Sanitize()
	selectSQL := `SELECT ` + key + `::text, ` + col + ` FROM ` + table + ` WHERE ` + col + ` IS NOT NULL AND ` + key + `::text > $1 ORDER BY ` + key + `::text LIMIT $2`
	updateSQL := `UPDATE ` + table + ` SET ` + col + ` = $3 WHERE ` + key + `::text = $1 AND ` + col + ` = $2`
	after := ""
	for {
		rows, err := db.Query(ctx, selectSQL, after, batchSize)
		if err != nil {
			return cr, fmt.Errorf("error reading %s.%s: %w", c.Table, c.Column, err)
		}
		type kv struct{ k, v string }
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (kv, error) {
			var x kv
			err := r.Scan(&x.k, &x.v)
			return x, err
		})
		if err != nil {
			return cr, fmt.Errorf("error reading %s.%s: %w", c.Table, c.Column, err)
		}
		if len(batch) == 0 {
			return cr, nil
		}
		cr.Values += len(batch)
		after = batch[len(batch)-1].k
		var items []Sealed
		var keys []kv
		for _, x := range batch {
			if needsRewrap(box, x.v, version) {
				items = append(items, Sealed{Binding: c.binding(x.k), Ciphertext: x.v})
				keys = append(keys, x)
			}
		}
		if len(items) == 0 {
			continue
		}
		rewrapped, err := box.Rewrap(ctx, items)
		if err != nil {
			return cr, err
		}
		for i, x := range keys {
			tag, err := db.Exec(ctx, updateSQL, x.k, x.v, rewrapped[i])
			if err != nil {
				return cr, fmt.Errorf("error updating %s.%s: %w", c.Table, c.Column, err)
			}
			cr.Rewrapped += int(tag.RowsAffected())
		}
	}
}

func countStale(ctx context.Context, db DB, box Rotator, c EncryptedColumn, version int) (int, error) {
	rows, err := db.Query(ctx, `SELECT `+pgx.Identifier{c.Column}.Sanitize()+` FROM `+pgx.Identifier{c.Table}.Sanitize()+
		` WHERE `+pgx.Identifier{c.Column}.Sanitize()+` IS NOT NULL`)
	if err != nil {
		return 0, fmt.Errorf("error checking %s.%s: %w", c.Table, c.Column, err)
	}
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("error checking %s.%s: %w", c.Table, c.Column, err)
	}
	n := 0
	for _, v := range values {
		if needsRewrap(box, v, version) {
			n++
		}
	}
	return n, nil
}
