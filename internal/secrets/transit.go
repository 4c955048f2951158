package secrets

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// ErrTransitKey means the transit key is missing or not usable as webhookdb needs it (derived).
var ErrTransitKey = errors.New("transit key unusable")

const transitPrefix = "vault:v"

// TransitConfig configures a Transit box.
type TransitConfig struct {
	// Client is an authenticated Vault client (required).
	Client *vaultapi.Client
	// Mount is the transit engine's mount path; default "transit".
	Mount string
	// Key is the transit key's name; default "webhookdb".
	Key string
	// Backupable, when EnsureKey creates the key, makes it exportable with plaintext backups allowed, so that
	// Backup and Restore work. Only for a Vault dev server, which keeps nothing across restarts: it lets key
	// material leave Vault.
	Backupable bool
}

// WithDefaults returns a copy with defaults filled in.
func (c TransitConfig) WithDefaults() TransitConfig {
	if c.Mount == "" {
		c.Mount = "transit"
	}
	c.Mount = strings.Trim(c.Mount, "/")
	if c.Key == "" {
		c.Key = "webhookdb"
	}
	return c
}

func (c TransitConfig) validate() error {
	if c.Client == nil {
		return errors.New("secrets: transit Client is required")
	}
	if strings.ContainsAny(c.Key, "/ ") || c.Key == "" {
		return fmt.Errorf("secrets: transit key name %q is invalid", c.Key)
	}
	return nil
}

// Transit encrypts through Vault's transit engine with one derived key: each ciphertext's binding is the
// key derivation context, so it decrypts only in its own table, column and row. Plaintext keys never leave
// Vault, and rewrapping (key rotation) never returns plaintext.
type Transit struct {
	cfg TransitConfig
}

// NewTransit returns a transit box (call EnsureKey once before use).
func NewTransit(cfg TransitConfig) (*Transit, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Transit{cfg: cfg}, nil
}

func (t *Transit) path(op string) string { return t.cfg.Mount + "/" + op + "/" + t.cfg.Key }

// KeyPath is the key's path in Vault (mount/keys/name), for messages and policies.
func (t *Transit) KeyPath() string { return t.path("keys") }

func bindingContext(b Binding) string { return base64.StdEncoding.EncodeToString([]byte(b.String())) }

// EnsureKey creates the key (aes256-gcm96, derived) when it does not exist, and checks an existing one is
// derived (without derivation a ciphertext would decrypt in any row).
func (t *Transit) EnsureKey(ctx context.Context) error {
	s, err := t.cfg.Client.Logical().ReadWithContext(ctx, t.path("keys"))
	if err != nil {
		return fmt.Errorf("error reading transit key %s: %w", t.cfg.Key, err)
	}
	if s == nil {
		data := map[string]any{"type": "aes256-gcm96", "derived": true}
		if t.cfg.Backupable {
			data["exportable"] = true
			data["allow_plaintext_backup"] = true
		}
		if _, err := t.cfg.Client.Logical().WriteWithContext(ctx, t.path("keys"), data); err != nil {
			return fmt.Errorf("error creating transit key %s: %w", t.cfg.Key, err)
		}
		return nil
	}
	if derived, _ := s.Data["derived"].(bool); !derived {
		return fmt.Errorf("%w: %s is not a derived key: ciphertexts could not be bound to their rows", ErrTransitKey, t.cfg.Key)
	}
	return nil
}

// Encrypt implements Box.
func (t *Transit) Encrypt(ctx context.Context, b Binding, plaintext []byte) (string, error) {
	s, err := t.cfg.Client.Logical().WriteWithContext(ctx, t.path("encrypt"), map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString(plaintext),
		"context":   bindingContext(b),
	})
	if err != nil {
		return "", fmt.Errorf("error encrypting with transit: %w", err)
	}
	ct, _ := s.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, transitPrefix) {
		return "", errors.New("transit returned no ciphertext")
	}
	return ct, nil
}

// Decrypt implements Box.
func (t *Transit) Decrypt(ctx context.Context, b Binding, ciphertext string) ([]byte, error) {
	if !t.Owns(ciphertext) {
		return nil, fmt.Errorf("%w: not a transit ciphertext", ErrDecrypt)
	}
	s, err := t.cfg.Client.Logical().WriteWithContext(ctx, t.path("decrypt"), map[string]any{
		"ciphertext": ciphertext,
		"context":    bindingContext(b),
	})
	if err != nil {
		if isVaultStatus(err, http.StatusBadRequest) {
			return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
		}
		return nil, fmt.Errorf("error decrypting with transit: %w", err)
	}
	p, _ := s.Data["plaintext"].(string)
	plain, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w: transit returned malformed plaintext", ErrDecrypt)
	}
	return plain, nil
}

// Owns reports whether a ciphertext was made by transit.
func (t *Transit) Owns(ciphertext string) bool { return strings.HasPrefix(ciphertext, transitPrefix) }

// KeyVersion reports which key version sealed a ciphertext.
func (t *Transit) KeyVersion(ciphertext string) (int, error) {
	rest, ok := strings.CutPrefix(ciphertext, transitPrefix)
	if !ok {
		return 0, fmt.Errorf("%w: not a transit ciphertext", ErrDecrypt)
	}
	ver, _, ok := strings.Cut(rest, ":")
	v, err := strconv.Atoi(ver)
	if !ok || err != nil {
		return 0, fmt.Errorf("%w: malformed transit ciphertext", ErrDecrypt)
	}
	return v, nil
}

// CurrentVersion implements Rotator: the key's latest version.
func (t *Transit) CurrentVersion(ctx context.Context) (int, error) {
	latest, _, err := t.KeyVersions(ctx)
	return latest, err
}

// KeyVersions returns the key's latest and minimum decryption versions.
func (t *Transit) KeyVersions(ctx context.Context) (latest, minDecryption int, err error) {
	s, err := t.cfg.Client.Logical().ReadWithContext(ctx, t.path("keys"))
	if err != nil {
		return 0, 0, fmt.Errorf("error reading transit key %s: %w", t.cfg.Key, err)
	}
	if s == nil {
		return 0, 0, fmt.Errorf("%w: %s does not exist", ErrTransitKey, t.cfg.Key)
	}
	latest, err = jsonInt(s.Data["latest_version"])
	if err != nil {
		return 0, 0, err
	}
	minDecryption, err = jsonInt(s.Data["min_decryption_version"])
	return latest, minDecryption, err
}

// RotateKey implements KeyRotator: a new key version becomes the one that encrypts.
func (t *Transit) RotateKey(ctx context.Context) (int, error) {
	if _, err := t.cfg.Client.Logical().WriteWithContext(ctx, t.cfg.Mount+"/keys/"+t.cfg.Key+"/rotate", nil); err != nil {
		return 0, fmt.Errorf("error rotating transit key %s: %w", t.cfg.Key, err)
	}
	return t.CurrentVersion(ctx)
}

// SetMinDecryptionVersion implements KeyRotator: ciphertexts under older versions stop decrypting.
func (t *Transit) SetMinDecryptionVersion(ctx context.Context, v int) error {
	if _, err := t.cfg.Client.Logical().WriteWithContext(ctx, t.cfg.Mount+"/keys/"+t.cfg.Key+"/config", map[string]any{"min_decryption_version": v}); err != nil {
		return fmt.Errorf("error raising min_decryption_version of %s: %w", t.cfg.Key, err)
	}
	return nil
}

// Rewrap implements Rotator with transit's batch rewrap: ciphertexts come back under the latest version and
// the plaintext never leaves Vault.
func (t *Transit) Rewrap(ctx context.Context, items []Sealed) ([]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	batch := make([]map[string]any, len(items))
	for i, it := range items {
		batch[i] = map[string]any{"ciphertext": it.Ciphertext, "context": bindingContext(it.Binding)}
	}
	s, err := t.cfg.Client.Logical().WriteWithContext(ctx, t.path("rewrap"), map[string]any{"batch_input": batch})
	if err != nil {
		return nil, fmt.Errorf("error rewrapping with transit: %w", err)
	}
	results, _ := s.Data["batch_results"].([]any)
	if len(results) != len(items) {
		return nil, fmt.Errorf("transit rewrap returned %d results for %d inputs", len(results), len(items))
	}
	out := make([]string, len(items))
	for i, r := range results {
		m, _ := r.(map[string]any)
		if e, _ := m["error"].(string); e != "" {
			return nil, fmt.Errorf("%w: rewrapping %s: %s", ErrDecrypt, items[i].Binding, e)
		}
		out[i], _ = m["ciphertext"].(string)
		if !t.Owns(out[i]) {
			return nil, fmt.Errorf("transit rewrap returned no ciphertext for %s", items[i].Binding)
		}
	}
	return out, nil
}

// Backup returns a backup of the key (all versions and its configuration); the key must be Backupable.
func (t *Transit) Backup(ctx context.Context) (string, error) {
	s, err := t.cfg.Client.Logical().ReadWithContext(ctx, t.cfg.Mount+"/backup/"+t.cfg.Key)
	if err != nil {
		return "", fmt.Errorf("error backing up transit key %s: %w", t.cfg.Key, err)
	}
	if s == nil {
		return "", fmt.Errorf("%w: %s does not exist", ErrTransitKey, t.cfg.Key)
	}
	b, _ := s.Data["backup"].(string)
	if b == "" {
		return "", errors.New("transit returned an empty backup")
	}
	return b, nil
}

// Restore restores the key from a Backup (a Vault dev server after a restart).
func (t *Transit) Restore(ctx context.Context, backup string) error {
	if _, err := t.cfg.Client.Logical().WriteWithContext(ctx, t.cfg.Mount+"/restore/"+t.cfg.Key, map[string]any{"backup": backup}); err != nil {
		return fmt.Errorf("error restoring transit key %s: %w", t.cfg.Key, err)
	}
	return nil
}

func jsonInt(v any) (int, error) {
	switch n := v.(type) {
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("unexpected number %v from transit", v)
}

func isVaultStatus(err error, code int) bool {
	var re *vaultapi.ResponseError
	return errors.As(err, &re) && re.StatusCode == code
}

// KeyInfo is the transit key's state as rotation needs it.
type KeyInfo struct {
	Latest, MinDecryption int
	// LatestCreated is when the latest version was made.
	LatestCreated time.Time
}

// Info reads the key's latest and minimum decryption versions and when the latest was created.
func (t *Transit) Info(ctx context.Context) (KeyInfo, error) {
	s, err := t.cfg.Client.Logical().ReadWithContext(ctx, t.path("keys"))
	if err != nil {
		return KeyInfo{}, fmt.Errorf("error reading transit key %s: %w", t.cfg.Key, err)
	}
	if s == nil {
		return KeyInfo{}, fmt.Errorf("%w: %s does not exist", ErrTransitKey, t.cfg.Key)
	}
	var ki KeyInfo
	if ki.Latest, err = jsonInt(s.Data["latest_version"]); err != nil {
		return ki, err
	}
	if ki.MinDecryption, err = jsonInt(s.Data["min_decryption_version"]); err != nil {
		return ki, err
	}
	keys, _ := s.Data["keys"].(map[string]any)
	switch v := keys[strconv.Itoa(ki.Latest)].(type) {
	case string:
		ki.LatestCreated, err = time.Parse(time.RFC3339Nano, v)
	default:
		var unix int
		if unix, err = jsonInt(v); err == nil {
			ki.LatestCreated = time.Unix(int64(unix), 0)
		}
	}
	if err != nil {
		return ki, fmt.Errorf("error reading when version %d of transit key %s was made: %w", ki.Latest, t.cfg.Key, err)
	}
	return ki, nil
}
