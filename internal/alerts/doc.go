// Package alerts tells an org when something of its own breaks: changes that failed for good
// (fanout.failed_changes), a subscription endpoint disabled after failing for days, read-only credentials
// that could not be renewed, and (when backfill exists) backfill credentials that failed. An org registers
// error handlers: URLs, signed the Standard Webhooks way with a whsec_ secret of their own, or email
// addresses, reached through the configured SMTP server. Each alert is raised once per dedupe key and at
// most RatePerHour an org an hour are sent (the rest are kept as suppressed).
//
// It owns alert_handlers, alerts and alert_cursors.
package alerts
