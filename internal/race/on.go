//go:build race

// Package race tells whether the binary was built with the race detector.
// Tests that count allocations skip the count under it: the detector makes
// sync.Pool drop items at random, so a pooled value is allocated again now
// and then and the count means nothing.
package race

// Enabled is true in a binary built with -race.
const Enabled = true
