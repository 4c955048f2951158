// Package schema embeds webhookdb's SQL files: the numbered migrations of the application database, applied
// with goose by internal/migrate.
package schema

import "embed"

// Migrations holds migrations/NNNNN_name.sql.
//
//go:embed migrations/*.sql
var Migrations embed.FS
