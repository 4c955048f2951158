// Package subsbench is `webhookdb bench subscriptions`: webhook subscription notifications per second and the
// lag from a change's staging commit to its signed delivery at a local receiver, at a steady rate of changes
// (target: p99 under 1 s at 2,000 changes/s), with the fanout, its relay and the deliveries in this process on
// a private cluster.
package subsbench
