package ingest

import (
	"strings"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
)

// Opaque ids are "svi_" and lower-case base32 (integrations.NewOpaqueID); the table's CHECK allows [a-z0-9]{26,}
// after the prefix. Anything else is 404 without a lookup.
const (
	minOpaqueIDLen = len(integrations.OpaquePrefix) + 26
	maxOpaqueIDLen = len(integrations.OpaquePrefix) + 64
)

func wellFormedOpaqueID(id string) bool {
	if len(id) < minOpaqueIDLen || len(id) > maxOpaqueIDLen || !strings.HasPrefix(id, integrations.OpaquePrefix) {
		return false
	}
	for i := len(integrations.OpaquePrefix); i < len(id); i++ {
		if c := id[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
