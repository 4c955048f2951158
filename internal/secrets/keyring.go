package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

var (
	// ErrDecrypt means a ciphertext could not be decrypted: wrong key, wrong binding, or tampered data.
	ErrDecrypt = errors.New("secret cannot be decrypted (wrong key, or moved from another row or column)")
	// ErrKeyringInvalid means the keyring definition could not be parsed.
	ErrKeyringInvalid = errors.New("invalid keyring")
)

// Binding names where a ciphertext lives; it is authenticated with the ciphertext.
type Binding struct {
	Table  string
	Column string
	Row    string // the row's stable identity (a primary key or unique key)
}

func (b Binding) String() string { return b.Table + "/" + b.Column + "/" + b.Row }

// Box encrypts and decrypts bound secrets.
type Box interface {
	Encrypt(ctx context.Context, b Binding, plaintext []byte) (string, error)
	Decrypt(ctx context.Context, b Binding, ciphertext string) ([]byte, error)
}

const keyringPrefix = "whdb:v"

// Keyring is a local set of versioned AES-256 keys; the highest version encrypts, every version decrypts.
type Keyring struct {
	keys    map[int]cipher.AEAD
	current int
}

// ParseKeyring reads "1:<base64 32-byte key>,2:<base64 key>" (commas or newlines between entries).
func ParseKeyring(s string) (*Keyring, error) {
	k := &Keyring{keys: map[int]cipher.AEAD{}}
	for _, entry := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == ' ' }) {
		ver, enc, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("%w: entry %q is not VERSION:BASE64KEY", ErrKeyringInvalid, redact(entry))
		}
		v, err := strconv.Atoi(ver)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%w: version %q is not a positive integer", ErrKeyringInvalid, ver)
		}
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("%w: key version %d must be 32 bytes, base64-encoded", ErrKeyringInvalid, v)
		}
		block, _ := aes.NewCipher(raw)
		aead, _ := cipher.NewGCM(block)
		if _, dup := k.keys[v]; dup {
			return nil, fmt.Errorf("%w: version %d appears twice", ErrKeyringInvalid, v)
		}
		k.keys[v] = aead
		if v > k.current {
			k.current = v
		}
	}
	if len(k.keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrKeyringInvalid)
	}
	return k, nil
}

// LoadKeyringFile reads a keyring from a file (one VERSION:BASE64KEY a line).
func LoadKeyringFile(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("error reading keyring file: %w", err)
	}
	return ParseKeyring(string(b))
}

// NewKeyEntry returns a fresh "VERSION:BASE64KEY" line.
func NewKeyEntry(version int) string {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	return strconv.Itoa(version) + ":" + base64.StdEncoding.EncodeToString(raw)
}

// Versions lists the key versions, oldest first.
func (k *Keyring) Versions() []int {
	vs := make([]int, 0, len(k.keys))
	for v := range k.keys {
		vs = append(vs, v)
	}
	sort.Ints(vs)
	return vs
}

// Current is the version new ciphertexts use.
func (k *Keyring) Current() int { return k.current }

// Encrypt seals plaintext under the current key, authenticating the binding.
func (k *Keyring) Encrypt(_ context.Context, b Binding, plaintext []byte) (string, error) {
	aead := k.keys[k.current]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("error generating nonce: %w", err)
	}
	sealed := aead.Seal(nonce, nonce, plaintext, []byte(b.String()))
	return keyringPrefix + strconv.Itoa(k.current) + ":" + base64.StdEncoding.EncodeToString(sealed), nil
}

// Decrypt opens a ciphertext made by Encrypt with the same binding.
func (k *Keyring) Decrypt(_ context.Context, b Binding, ciphertext string) ([]byte, error) {
	v, sealed, err := parseKeyringCiphertext(ciphertext)
	if err != nil {
		return nil, err
	}
	aead, ok := k.keys[v]
	if !ok {
		return nil, fmt.Errorf("%w: key version %d is not in the keyring", ErrDecrypt, v)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, ErrDecrypt
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(b.String()))
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}

// KeyVersion reports which key version sealed a ciphertext.
func (k *Keyring) KeyVersion(ciphertext string) (int, error) {
	v, _, err := parseKeyringCiphertext(ciphertext)
	return v, err
}

func parseKeyringCiphertext(s string) (int, []byte, error) {
	rest, ok := strings.CutPrefix(s, keyringPrefix)
	if !ok {
		return 0, nil, fmt.Errorf("%w: not a keyring ciphertext", ErrDecrypt)
	}
	ver, enc, ok := strings.Cut(rest, ":")
	v, err := strconv.Atoi(ver)
	if !ok || err != nil {
		return 0, nil, fmt.Errorf("%w: malformed ciphertext", ErrDecrypt)
	}
	sealed, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: malformed ciphertext", ErrDecrypt)
	}
	return v, sealed, nil
}

func redact(s string) string {
	if len(s) > 6 {
		return s[:6] + "..."
	}
	return s
}
