// Package savedquery holds an org's saved queries: named, read-only statements that run on the org's own service
// login (never a member's), the way `db sql` runs, and that can be published at an unguessable, revocable URL.
//
// It owns the saved_queries table, the public tokens (only their SHA-256 is stored), the check a statement
// passes before it is saved (Check), the buffered, capped result of a run in JSON or CSV (Collect), and the
// short-lived cache of public results (Cache). Connecting to the org's database, the transaction and its
// timeout are the API's: the same path as `db sql`.
package savedquery
