// Package e2e holds sluice's end-to-end tests: real sluice processes (the
// gateway and `sluice sim` replicas, built from this checkout) on loopback,
// with faults injected the way they happen in production — a replica killed,
// frozen mid-stream, or a burst of traffic beyond capacity.
package e2e
