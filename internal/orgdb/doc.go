// Package orgdb ties the application database to the database servers: it registers servers (admin URL
// stored encrypted), places each new org on the server with the fewest orgs, provisions and deletes org
// databases (resumably, recording each step), and issues, renews, rolls and revokes each org's read-only
// credentials through an Issuer: Vault's database engine (package vault) or PostgreSQL directly
// (PostgresIssuer, for --credentials=postgres). Both issue the same roles with the same SQL, expiry and
// revocation (package pgroles).
//
// The management API calls Connection and RollCredentials; the server runs Run (renewals, due revocations,
// sweeping expired login roles) and, where Vault forgets everything on restart (dev), Reconcile at start.
package orgdb
