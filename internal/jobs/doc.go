// Package jobs turns inference requests into durable asynchronous jobs.
//
// A job is a recorded HTTP request (method, path, a few headers, body) owned
// by a tenant. Submit stores it and puts it on a priority queue; the
// dispatcher of every Service sharing the store leases jobs from the queue,
// replays each through the gateway's inference handler (Options.Exec), and
// records the captured response as the job's result. Handler serves the HTTP
// API of SPEC section 6 (POST/GET/DELETE /v1/jobs).
//
// Guarantees (docs/jobs.md explains why they hold):
//
//   - A job Submit returned is never lost: it stays on the queue until a
//     dispatcher has recorded its final state.
//   - Dispatch is at-least-once: a dispatcher that stops renewing its lease
//     (crash, partition) loses the job to another after Store.Lease().
//   - A result is recorded once: the transition from running to a final
//     state is a compare-and-set on the stored job that only the current
//     attempt (identified by its run id) can win.
//
// The queue and the job records live behind the Store interface; the
// natsstore (embedded or external NATS JetStream) and redisstore packages
// implement it, and jobstest holds the conformance suite both pass.
package jobs
