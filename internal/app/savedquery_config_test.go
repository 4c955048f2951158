package app

import (
	"strings"
	"testing"
	"time"
)

// Public saved queries: cache TTL and caps from flags or the environment, defaults, and bad values named.
func TestSavedQueryConfig(t *testing.T) {
	t.Setenv(EnvSavedQueryCacheTTL, "5s")
	t.Setenv(EnvSavedQueryPublicMaxRows, "50")
	c := bind(t, FlagsAll)
	c.DatabaseURL, c.Credentials, c.Keyring = "postgres://localhost/x", CredentialsPostgres, "1:x"
	d := c.WithDefaults()
	if err := d.validate(); err != nil {
		t.Fatal(err)
	}
	if d.SavedQueries.CacheTTL != 5*time.Second || d.SavedQueries.PublicMaxRows != 50 || d.SavedQueries.PublicMaxBytes != 1<<20 {
		t.Fatalf("saved query settings: %+v", d.SavedQueries)
	}
	c.SavedQueries.CacheTTL = 2 * time.Hour
	if err := c.WithDefaults().validate(); err == nil || !strings.Contains(err.Error(), "--saved-query-cache-ttl") {
		t.Fatalf("a TTL of 2h: %v", err)
	}
	t.Setenv(EnvSavedQueryPublicMaxBytes, "lots")
	if err := bind(t, FlagsAll).WithDefaults().validate(); err == nil || !strings.Contains(err.Error(), EnvSavedQueryPublicMaxBytes) {
		t.Fatalf("a malformed byte cap: %v", err)
	}
}
