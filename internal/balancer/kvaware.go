package balancer

import "math/rand/v2"

// Interface guard.
var _ Balancer = (*KVAware)(nil)

// KVAware ("kv_aware") is the prompt-aware balancer's stand-in in this
// package. The balancer itself lives in internal/kvroute, because it needs
// what Pick's signature does not carry (the request's prompt blocks), its
// own configuration (scorer weights, index, scrape) and goroutines (the
// /metrics scraper, the index sharing). A pool whose balancer is kv_aware
// routes through a kvroute.Router; KVAware is what New returns for the
// name, and picks as P2CEWMA does — the load-only path kvroute takes for a
// request without prompt blocks — so that a pool never fails to build for
// want of the router. The zero value is ready to use.
type KVAware struct {
	P2CEWMA
}

// NewKVAware returns a KVAware that draws from src; nil means the runtime's
// lock-free generator.
func NewKVAware(src rand.Source) *KVAware {
	k := &KVAware{}
	k.rng.seed(src)
	return k
}
