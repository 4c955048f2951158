package app

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

// SavedQueryConfig tunes public saved queries (the API role).
type SavedQueryConfig struct {
	// CacheTTL is how long a public query's result is served again before the query runs anew
	// (WEBHOOKDB_SAVED_QUERY_CACHE_TTL); default 30s, at most an hour.
	CacheTTL time.Duration
	// PublicMaxRows and PublicMaxBytes cap a public result (WEBHOOKDB_SAVED_QUERY_PUBLIC_MAX_ROWS,
	// WEBHOOKDB_SAVED_QUERY_PUBLIC_MAX_BYTES); defaults 1,000 and 1 MiB.
	PublicMaxRows  int
	PublicMaxBytes int
}

// Environment variables of SavedQueryConfig.
const (
	EnvSavedQueryCacheTTL       = "WEBHOOKDB_SAVED_QUERY_CACHE_TTL"
	EnvSavedQueryPublicMaxRows  = "WEBHOOKDB_SAVED_QUERY_PUBLIC_MAX_ROWS"
	EnvSavedQueryPublicMaxBytes = "WEBHOOKDB_SAVED_QUERY_PUBLIC_MAX_BYTES"
)

// WithDefaults returns a copy with defaults filled in.
func (c SavedQueryConfig) WithDefaults() SavedQueryConfig {
	if c.CacheTTL == 0 {
		c.CacheTTL = 30 * time.Second
	}
	if c.PublicMaxRows == 0 {
		c.PublicMaxRows = 1000
	}
	if c.PublicMaxBytes == 0 {
		c.PublicMaxBytes = 1 << 20
	}
	return c
}

func (c SavedQueryConfig) validate() []error {
	var errs []error
	if c.CacheTTL < 0 || c.CacheTTL > time.Hour {
		errs = append(errs, fmt.Errorf("saved query cache TTL %s must be between 0 and 1h (--saved-query-cache-ttl or %s)", c.CacheTTL, EnvSavedQueryCacheTTL))
	}
	if c.PublicMaxRows < 0 {
		errs = append(errs, fmt.Errorf("public saved query row cap must not be negative (--saved-query-public-max-rows or %s)", EnvSavedQueryPublicMaxRows))
	}
	if c.PublicMaxBytes < 0 || c.PublicMaxBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("public saved query byte cap must be between 0 and 64 MiB (--saved-query-public-max-bytes or %s)", EnvSavedQueryPublicMaxBytes))
	}
	return errs
}

func (c *Config) bindSavedQueryFlags(fs *pflag.FlagSet) {
	s := &c.SavedQueries
	fs.DurationVar(&s.CacheTTL, "saved-query-cache-ttl", c.envDuration(EnvSavedQueryCacheTTL), "how long a public saved query's result is served again before it runs anew; default 30s ("+EnvSavedQueryCacheTTL+")")
	fs.IntVar(&s.PublicMaxRows, "saved-query-public-max-rows", int(c.envInt(EnvSavedQueryPublicMaxRows)), "rows of a public saved query's result at most; default 1000 ("+EnvSavedQueryPublicMaxRows+")")
	fs.IntVar(&s.PublicMaxBytes, "saved-query-public-max-bytes", int(c.envInt(EnvSavedQueryPublicMaxBytes)), "bytes of a public saved query's result at most; default 1048576 ("+EnvSavedQueryPublicMaxBytes+")")
}
