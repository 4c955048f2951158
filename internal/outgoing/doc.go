// Package outgoing is how webhookdb calls URLs its users registered (webhook subscriptions, alert handlers):
// an HTTP client that refuses to connect to loopback, private, link-local, metadata and other non-public
// addresses (checked on the address actually dialed, so a name that resolves to one is refused too), follows
// no redirects, reads answers up to a cap and gives up quickly; and Standard Webhooks signing with whsec_
// secrets.
package outgoing
