// Package replicas starts, stops and watches the replicas of a pool.
//
// ProcessSet runs them as local processes under sluice's supervision (a
// pool's process: block). It keeps a desired number of copies of a command
// running, each on a free port. A replica joins its pool only once its
// ready path answers 200. A crashed one is restarted with backoff. Its output
// goes to sluice's log under its replica id. A replica being stopped is
// drained first (no new requests; in-flight ones finish within
// stop_timeout), then sent SIGTERM, then SIGKILL. No replica outlives sluice,
// even when sluice is killed with SIGKILL (on Linux). ProcessSet is the
// autoscaler's actuator for such pools.
//
// docs/autoscaling.md describes the guarantees and why they hold.
package replicas
