// Package subscriptions delivers an org's row changes to the HTTPS endpoints it subscribed, signed the
// Standard Webhooks way. The fanout records each row write of a subscribed org in the org database's outbox,
// in the transaction that writes the row; its relay calls Record, which stores one delivery per matching
// subscription here (keyed by the message id, so a notification relayed twice is stored once). Run delivers
// them: per endpoint at most Concurrency at once, in order per remote key, retried on a schedule (immediately,
// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with jitter) on an injectable clock; an endpoint whose every
// delivery has failed for DisableAfter is disabled and the org alerted once. Past PendingCap pending
// deliveries an endpoint's new notifications are stored as failed (never dropped), for Recover.
//
// It owns subscriptions and subscription_deliveries.
package subscriptions
