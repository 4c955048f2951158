// Package pgcluster runs PostgreSQL clusters owned by webhookdb: `webhookdb dev` and the tests start their own
// servers from the machine's installed PostgreSQL binaries, in a directory of their own, with logical decoding on,
// listening on a free loopback port, and with password (scram-sha-256) authentication on TCP so that credential
// checks mean something. Only the superuser may use the private Unix socket without a password.
package pgcluster
