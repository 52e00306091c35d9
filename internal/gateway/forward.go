package gateway

import (
	"net/http"

	"github.com/sluice-ai/sluice/internal/cache"
	"github.com/sluice-ai/sluice/internal/proxy"
)

// forward answers an admitted request: from the cache when its pool caches
// and holds the answer, else through the pool (balancer pick, attempts,
// retries) and, when the pool cannot serve, its fallbacks. The response's
// usage is observed on the way for settle.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, t *table, x *exchange) {
	if x.info.Stream && (x.pool.Ready() == 0 || x.pool.QueueDepth() > 0) {
		// No replica free: keep the stream alive while one starts.
		ws := keepWaiting(w, s.opts.Clock)
		defer ws.finish()
		w = ws
	}
	if x.hideUsage {
		hw := &hiddenUsage{ResponseWriter: w}
		defer hw.finish()
		w = hw
	}
	x.fwd = proxy.Request{Pool: x.pool, HashKey: x.hashKey, Priority: x.priority, Body: x.body, RequestID: x.reqID, Observer: x}
	pr := &x.fwd
	pr.Prompt = x.pool.HashPrompt(x.body) // nil unless the pool is kv_aware
	defer pr.Prompt.Release()
	pc := x.pool.Config()
	ttl := pc.Cache.TTL.D()
	if ttl <= 0 || s.cache == nil || x.body == nil {
		x.res = s.serve(w, r, t, pr)
		return
	}
	tenant := ""
	if !pc.Cache.Shared {
		tenant = x.tenantName()
	}
	// The key covers the host and the query too: a response to
	// ?api-version=a is not one to a request without it.
	key, err := cache.KeyFor(x.pool.Name(), r.Host+r.URL.RequestURI(), x.body, tenant)
	if err != nil {
		x.res = s.serve(w, r, t, pr)
		return
	}
	switch s.cache.Serve(w, r, key, ttl, func(w http.ResponseWriter) bool {
		x.res = s.serve(w, r, t, pr)
		return !x.res.Abort
	}) {
	case cache.Hit:
		x.hit = true
		x.res.Status = http.StatusOK
	case cache.Gone:
		x.res.Status = proxy.StatusClientClosed
	}
}

// Observe scans the response for its usage as it passes to the client.
func (x *exchange) Observe(h http.Header, p []byte) {
	if !x.observed {
		x.observed = true
		x.usage.Reset(h.Get("Content-Type"))
	}
	_, _ = x.usage.Write(p)
}

// serve forwards to the request's pool and, when that pool cannot serve it
// (no capacity, breaker open, retries exhausted — and nothing was written
// yet), to its fallback pools in order. A fallback that serves is recorded
// in X-Sluice-Fallback and sluice_fallbacks_total.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, t *table, pr *proxy.Request) proxy.Result {
	primary := pr.Pool
	res := s.proxy.Serve(w, r, pr)
	if res.Error != nil && pr.Replayable(r) {
		for _, name := range primary.Config().Fallback {
			fb := t.pools[name]
			if fb == nil {
				continue
			}
			fpr := *pr
			fpr.Pool = fb
			w.Header().Set("X-Sluice-Fallback", name)
			fres := s.proxy.Serve(w, r, &fpr)
			fres.Attempts += res.Attempts
			res = fres
			if res.Error == nil {
				s.metrics.Fallbacks.WithLabelValues(primary.Name(), name).Inc()
				break
			}
		}
		if res.Error != nil {
			w.Header().Del("X-Sluice-Fallback")
		}
	}
	if res.Error != nil {
		res.Error.Write(w)
	}
	return res
}
