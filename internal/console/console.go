// Package console is the admin web console: a page served from the binary
// (HTML, JavaScript, CSS and the uPlot charting library, embedded) that
// polls the admin JSON APIs and draws live charts of request rate,
// latency, time to first token, tokens/s, queue depth and replicas (with the
// autoscaler's decisions), and tables of backends, jobs, recent job
// failures and tenants.
//
// It needs no build step and nothing from the internet: every file it
// loads is in static/. The page reads /api/pools, /api/jobs/stats and
// /api/jobs/failures (the gateway's) and /api/stats, which StatsHandler
// serves from the gateway's Prometheus registry.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

//go:embed static
var static embed.FS

// Options configure Handler. The zero value serves the page and assets,
// and /api/stats answers 404.
type Options struct {
	// Gatherer is read by /api/stats, usually the gateway's registry. If
	// nil, the console is served without /api/stats (charts stay empty).
	Gatherer prometheus.Gatherer
	// Tenants returns each tenant's configured limits, for "usage against
	// limits". If nil, tenants show usage only.
	Tenants func() []TenantLimits
}

// TenantLimits are one tenant's configured limits (0: none). Only the
// tenant's name and numbers: never its key.
type TenantLimits struct {
	Name        string `json:"name"`
	RPM         int    `json:"rpm,omitempty"`
	TPM         int    `json:"tpm,omitempty"`
	Concurrency int    `json:"concurrency,omitempty"`
}

// Handler serves the console: GET / (the page), GET /console/* (its
// assets) and GET /api/stats. Other paths answer 404, so it can be mounted
// as the admin mux's fallback pattern ("GET /").
func Handler(o Options) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed directive guarantees static/
	}
	mux := http.NewServeMux()
	assets := http.StripPrefix("/console/", http.FileServerFS(sub))
	mux.Handle("GET /console/", cacheFor(assets))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		page, err := fs.ReadFile(sub, "index.html")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		// Everything comes from this origin; no inline script.
		h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(page)
	})
	if o.Gatherer != nil {
		mux.Handle("GET /api/stats", StatsHandler(o.Gatherer, o.Tenants))
	}
	return mux
}

func cacheFor(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}
