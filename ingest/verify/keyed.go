package verify

import (
	"crypto/hmac"
	"hash"
	"sync"
)

// maxKeyedSecrets bounds the secrets a verifier keeps keyed states for: the current and previous secret of its
// integration, and room for a rotation in progress.
const maxKeyedSecrets = 4

// keyedMACs keeps HMAC states already keyed with a verifier's secrets. hmac.New hashes the padded key into two
// fresh digests on every call, about 1.3 µs of ingest's CPU a request under bench ingest; a used state's Reset
// restores the keyed state from a saved copy instead. A verifier lives as long as its integration's cache
// entry, so the secrets it sees are few.
type keyedMACs struct {
	mu      sync.Mutex
	entries []*keyedEntry // most recently added first
}

type keyedEntry struct {
	secret string
	key    []byte // nil: the secret yields no key
	pool   sync.Pool
}

// acquire returns a MAC keyed with what keyOf makes of secret, and the entry to release it to; ok is false when
// keyOf refuses the secret.
func (k *keyedMACs) acquire(secret string, h func() hash.Hash, keyOf func(string) ([]byte, bool)) (e *keyedEntry, mac hash.Hash, ok bool) {
	e = k.entry(secret, keyOf)
	if e.key == nil {
		return nil, nil, false
	}
	if m, ok := e.pool.Get().(hash.Hash); ok {
		return e, m, true
	}
	return e, hmac.New(h, e.key), true
}

// release makes mac, keyed for e, available again.
func (e *keyedEntry) release(mac hash.Hash) {
	mac.Reset()
	e.pool.Put(mac)
}

func (k *keyedMACs) entry(secret string, keyOf func(string) ([]byte, bool)) *keyedEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.entries {
		if e.secret == secret {
			return e
		}
	}
	e := &keyedEntry{secret: secret}
	if key, ok := keyOf(secret); ok {
		e.key = key
	}
	if len(k.entries) == maxKeyedSecrets {
		k.entries = k.entries[:maxKeyedSecrets-1]
	}
	k.entries = append([]*keyedEntry{e}, k.entries...)
	return e
}

// rawKey is the key of schemes that use the secret's bytes as they are.
func rawKey(secret string) ([]byte, bool) { return []byte(secret), true }
