package gateway

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/console"
	"github.com/sluice-ai/sluice/internal/kvroute"
	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/replicas"
)

// adminHandler serves the admin API: health, readiness, metrics, pools and
// reload.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("GET /api/pools", s.handlePools)
	mux.HandleFunc("POST /api/reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Reload(); err != nil {
			e := openai.BadRequest("config reload rejected; the previous config stays in force: " + err.Error())
			e.Code = "invalid_config"
			e.Write(w)
			return
		}
		writeJSON(w, map[string]string{"status": "reloaded"})
	})
	mux.HandleFunc("GET /api/jobs/stats", func(w http.ResponseWriter, r *http.Request) {
		if s.jobs == nil {
			openai.Unavailable("jobs_unavailable", "the job system is not running", 0).Write(w)
			return
		}
		s.jobs.StatsHandler().ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /api/jobs/failures", s.handleJobFailures)
	mux.Handle("GET /", console.Handler(console.Options{
		Gatherer: s.reg,
		Tenants:  func() []console.TenantLimits { return console.TenantsFromConfig(s.Config()) },
	}))
	return s.guardAdmin(mux)
}

// guardAdmin protects the admin API. With admin.token set, every request
// but the probes (/healthz, /readyz) must carry it as a Bearer token. A
// request that changes state (any method but GET and HEAD) is refused when
// a browser sent it from another origin — so a page an operator visits
// cannot make their browser reload the gateway — whatever the token.
func (s *Server) guardAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The probes are open, and so are the console's static page and
		// assets (a browser cannot send a token when it opens a page; the
		// page sends it on every /api call it makes).
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/" && !strings.HasPrefix(r.URL.Path, "/console/") {
			if token := s.Config().Admin.Token; token != "" {
				got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
				if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
					w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin"`)
					openai.Unauthorized("the admin API needs Authorization: Bearer <admin.token>").Write(w)
					return
				}
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && crossOrigin(r) {
			e := openai.Forbidden("cross-origin " + r.Method + " to the admin API refused")
			e.Code = "cross_origin"
			e.Write(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossOrigin reports whether a browser sent r from a page of another
// origin: Sec-Fetch-Site says so, or Origin names a host other than the
// one r was sent to. Clients that are not browsers (curl, kubectl, scripts)
// send neither header.
func crossOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	return err != nil || !strings.EqualFold(u.Host, r.Host)
}

// PoolStatus is one pool in GET /api/pools.
type PoolStatus struct {
	Name       string          `json:"name"`
	Models     []string        `json:"models"`
	Balancer   string          `json:"balancer"`
	InFlight   int64           `json:"in_flight"`
	QueueDepth int             `json:"queue_depth"`
	Replicas   ReplicaCounts   `json:"replicas"`
	Backends   []BackendStatus `json:"backends"`
	// Process is the replica supervisor's view (process pools only).
	Process *replicas.Status `json:"process,omitempty"`
	// Kubernetes is discovery's and the scale target's view (kubernetes
	// pools only).
	Kubernetes *KubeStatus `json:"kubernetes,omitempty"`
	// Actuator is the external actuator's view (pools scaled through
	// autoscale.actuator only).
	Actuator *ActuatorStatus `json:"actuator,omitempty"`
	// Autoscaler is the last autoscaling decision with its inputs and
	// reason (autoscaled pools only).
	Autoscaler *autoscale.Decision `json:"autoscaler,omitempty"`
	// KVAware is the kv_aware router's index and score inputs (kv_aware
	// pools only).
	KVAware *kvroute.Status `json:"kv_aware,omitempty"`
}

// ReplicaCounts are a pool's desired and ready replica counts.
type ReplicaCounts struct {
	Desired int `json:"desired"`
	Ready   int `json:"ready"`
}

// BackendStatus is one backend in GET /api/pools.
type BackendStatus struct {
	URL       string  `json:"url"`
	State     string  `json:"state"`
	InFlight  int64   `json:"in_flight"`
	EWMAMs    float64 `json:"ewma_ms"`
	Weight    int     `json:"weight"`
	Breaker   string  `json:"breaker"` // closed | open | half_open
	Ejections int     `json:"ejections"`
	LastError string  `json:"last_error,omitempty"`
}

// PoolStatuses reports every pool and backend, in config order.
func (s *Server) PoolStatuses() []PoolStatus {
	t := s.table.Load()
	out := make([]PoolStatus, 0, len(t.order))
	for i, p := range t.order {
		pc := &t.cfg.Pools[i]
		ps := PoolStatus{Name: p.Name(), Models: pc.Models, Balancer: p.BalancerName(), InFlight: p.InFlight(), QueueDepth: p.QueueDepth(), Backends: []BackendStatus{}}
		ps.KVAware = p.KVStatus()
		for _, b := range p.Backends() {
			ps.Backends = append(ps.Backends, BackendStatus{
				URL: b.Key(), State: b.State().String(), InFlight: b.InFlight(),
				EWMAMs: b.Cost() / 1e6, Weight: b.Weight(), Breaker: b.BreakerState(), Ejections: b.Ejections(), LastError: b.LastCheckError(),
			})
		}
		ps.Replicas = ReplicaCounts{Desired: len(ps.Backends), Ready: p.Ready()}
		s.mu.Lock()
		src := s.sources[p.Name()]
		s.mu.Unlock()
		if src != nil {
			src.describe(&ps)
		}
		out = append(out, ps)
	}
	return out
}

func (s *Server) handlePools(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"pools": s.PoolStatuses()})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// poolCollector exports per-backend gauges at scrape time, so the request
// path updates no gauges and series follow reloads.
type poolCollector struct{ s *Server }

var (
	descInFlight = prometheus.NewDesc("sluice_backend_in_flight", "Requests in flight to a backend.", []string{"pool", "backend"}, nil)
	descUp       = prometheus.NewDesc("sluice_backend_up", "1 when a backend takes traffic, else 0.", []string{"pool", "backend"}, nil)
	descQueue    = prometheus.NewDesc("sluice_queue_depth", "Requests waiting in a pool's queue.", []string{"pool"}, nil)
	descBreaker  = prometheus.NewDesc("sluice_backend_breaker", "A backend's circuit-breaker state (1 for the current one).", []string{"pool", "backend", "state"}, nil)
	descReplicas = prometheus.NewDesc("sluice_replicas", "A pool's backends by state.", []string{"pool", "state"}, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInFlight
	ch <- descUp
	ch <- descQueue
	ch <- descReplicas
	ch <- descBreaker
}

var breakerStates = []string{"closed", "open", "half_open"}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.s.table.Load()
	for _, p := range t.order {
		states := map[string]int{"healthy": 0, "unhealthy": 0, "ejected": 0, "draining": 0, "starting": 0}
		for _, b := range p.Backends() {
			ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(b.InFlight()), p.Name(), b.Key())
			up := 0.0
			if b.State().String() == "healthy" {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, p.Name(), b.Key())
			for _, st := range breakerStates {
				v := 0.0
				if b.BreakerState() == st {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, v, p.Name(), b.Key(), st)
			}
			states[b.State().String()]++
		}
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(p.QueueDepth()), p.Name())
		for st, n := range states {
			ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(n), p.Name(), st)
		}
	}
}
