package upstream

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Flight is one request's stay in a pool, from Enter to Leave: it counts as
// in flight (demand for the autoscaler, the base of the retry budget) and
// holds the request's share of the retry budget.
type Flight struct {
	p        *Pool
	retrying bool
}

// Enter counts a request in flight on the pool until Leave.
func (p *Pool) Enter() Flight {
	p.active.Add(1)
	return Flight{p: p}
}

// Leave ends the flight. Call it exactly once.
func (f *Flight) Leave() {
	if f.retrying {
		f.p.retrying.Add(-1)
	}
	f.p.active.Add(-1)
}

// MayRetry reports whether the request may be tried again under the pool's
// retry budget: retries in flight may not exceed retry.budget × requests in
// flight (with a floor of 3), so a failing pool is not hammered by retry
// storms. A request counts once however often it retries. A connect failure
// is exempt: the request never reached a replica, so retrying it adds no
// load that the first try did not already fail to add.
func (f *Flight) MayRetry(connectFailure bool) bool {
	if f.retrying || connectFailure {
		return true
	}
	limit := max(int64(f.p.Config().Retry.Budget*float64(f.p.active.Load())), 3)
	if f.p.retrying.Load() >= limit {
		return false
	}
	f.p.retrying.Add(1)
	f.retrying = true
	return true
}

// InFlight is the number of requests in flight through the pool, waiting
// in its queue included.
func (p *Pool) InFlight() int64 { return p.active.Load() }

// Attempt is one try of a request on one backend: Try starts it, Done ends
// it with its outcome. The backend's load, latency estimate, passive health
// and per-backend metrics change only through Done.
type Attempt struct {
	p      *Pool
	b      *Backend
	blocks int // prompt blocks, scaling the kv_aware first-token sample
}

// Outcome is how an attempt ended.
type Outcome struct {
	// Status is the backend's HTTP status; 0 when it sent none.
	Status int
	// Kind says why there was no status: "connect", "timeout", "error" or
	// "canceled" (the client left).
	Kind string
	// Failed counts the attempt against the backend's passive health: a
	// transport error, a 5xx, a response body that broke.
	Failed bool
	// Latency, when > 0, feeds the backend's latency estimate: the time to
	// the first body byte.
	Latency time.Duration
	// FirstToken, when > 0, is the time to the first body byte of a
	// response the backend sent (for a stream, its first event): it feeds
	// the kv_aware router's first-token estimate.
	FirstToken time.Duration
}

// Try picks a backend for a request and counts it in flight there; the
// caller must end the attempt with Done. It prefers a backend other than
// exclude (for retries). When no backend can take the request now, it waits
// in the pool's queue by priority, up to queue.timeout. prompt (nil when
// the pool is not kv_aware, see HashPrompt) lets kv_aware route by the
// prompt's cached prefix; key is the hash_on key.
func (p *Pool) Try(ctx context.Context, key string, prompt *Prompt, prio Priority, exclude *Backend) (Attempt, error) {
	blocks := prompt.blocks()
	b, err := p.acquire(ctx, key, blocks, prio, exclude)
	if err != nil {
		return Attempt{}, err
	}
	return Attempt{p: p, b: b, blocks: len(blocks)}, nil
}

// Backend is the backend the attempt goes to.
func (a Attempt) Backend() *Backend { return a.b }

// Transport is the connection pool for the attempt's backend.
func (a Attempt) Transport() http.RoundTripper { return a.p.Transport(a.b) }

// Done ends the attempt.
func (a Attempt) Done(o Outcome) {
	b := a.b
	if b.Upstream != nil {
		if o.Status > 0 {
			b.Upstream.Inc(o.Status)
		} else if o.Kind != "" {
			b.Upstream.IncLabel(o.Kind)
		}
	}
	if o.Kind != "canceled" {
		a.p.Observe(b, o.Failed)
	}
	if o.FirstToken > 0 && !o.Failed {
		if kv := a.p.kv.Load(); kv != nil {
			kv.ObserveTTFT(b.key, o.FirstToken, a.blocks)
		}
	}
	a.p.Release(b, o.Latency)
}

// retryPolicy is a pool's retry.on, compiled once per config.
type retryPolicy struct {
	connect, timeout bool
	statuses         map[int]bool
}

func compileRetry(on []string) *retryPolicy {
	rp := &retryPolicy{statuses: make(map[int]bool)}
	for _, c := range on {
		switch c {
		case "connect_failure":
			rp.connect = true
		case "timeout":
			rp.timeout = true
		default:
			if n, err := strconv.Atoi(c); err == nil {
				rp.statuses[n] = true
			}
		}
	}
	return rp
}

// RetryOn reports whether an attempt that ended with kind ("connect",
// "timeout", "error") or HTTP status may be retried under retry.on. A
// connect failure also matches 502, a timeout 504: the status each would
// produce.
func (p *Pool) RetryOn(kind string, status int) bool {
	rp := p.retry.Load()
	switch kind {
	case "connect":
		return rp.connect || rp.statuses[http.StatusBadGateway]
	case "timeout":
		return rp.timeout || rp.statuses[http.StatusGatewayTimeout]
	case "error":
		return rp.statuses[http.StatusBadGateway]
	}
	return rp.statuses[status]
}

// upstreamHeaders merges a pool's upstream_headers with a backend's own
// headers (which win), in canonical form, ready to set on requests.
func upstreamHeaders(pool, backend map[string]string) http.Header {
	if len(pool) == 0 && len(backend) == 0 {
		return nil
	}
	h := make(http.Header, len(pool)+len(backend))
	for k, v := range pool {
		h[http.CanonicalHeaderKey(k)] = []string{v}
	}
	for k, v := range backend {
		h[http.CanonicalHeaderKey(k)] = []string{v}
	}
	return h
}
