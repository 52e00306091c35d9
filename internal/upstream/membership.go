package upstream

// Membership is the side of a pool that a replica source sees: the
// supervisor of local processes and Kubernetes discovery both place their
// replicas through it, and nothing else of the pool.
type Membership interface {
	// NewBackend creates a backend for rawURL, not yet in the pool.
	NewBackend(rawURL string, weight int, state State) (*Backend, error)
	// AddBackend adds b to the pool.
	AddBackend(b *Backend)
	// RemoveBackend drops the backend with key; requests in flight finish.
	RemoveBackend(key string)
	// SetBackendState moves b to s (only healthy backends take requests).
	SetBackendState(b *Backend, s State)
	// Backends lists the pool's backends.
	Backends() []*Backend
}

var _ Membership = (*Pool)(nil)
