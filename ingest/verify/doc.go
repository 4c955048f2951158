// Package verify checks that an incoming webhook really comes from the
// provider an integration is configured for.
//
// Each integration stores a [Config] naming a signature scheme (Stripe,
// GitHub, Shopify, Twilio, Standard Webhooks, Intercom, a generic HMAC, a
// shared secret header, HTTP Basic auth, or none) and one or more secrets.
// [New] turns a Config into a [Verifier]; Verify checks a [Request] against
// the integration's active secrets, current first and then previous ones, so
// a secret can be rotated without losing deliveries signed with the old one.
//
// Verify returns nil or a [*Rejection]. A Rejection's Reason is written for
// the person operating the integration ("timestamp outside tolerance (412s
// old, tolerance 300s)") and is safe to send back in the Whdb-Rejected-Reason
// response header and to store: it never contains a secret, an expected
// signature, or any header value taken from the request.
//
// Every scheme works on the raw body bytes exactly as received and compares
// signatures in constant time. Empty secrets are ignored, because an empty
// HMAC key or shared secret is trivially forged.
//
// Secrets are handed to Verify rather than to New, so New cannot check them.
// Use [ValidateSecret] when a secret is saved (for example, a Standard
// Webhooks secret must be base64 after its whsec_ prefix); at verification
// time a secret that cannot be used is skipped, and if none is usable the
// request is rejected with a reason saying so.
//
// [SensitiveHeaders] lists the headers to drop before request headers are
// stored, and [DeliveryID] extracts the provider's delivery id for
// deduplication.
package verify
