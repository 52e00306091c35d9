package kvroute

import "github.com/prometheus/client_golang/prometheus"

// Metrics are kv_aware's metric families, shared by the routers of every
// pool (each resolves its pool's children once, so picks do no label
// hashing). Create one per registry with NewMetrics.
type Metrics struct {
	// Picks counts routing decisions by outcome: hit (the chosen replica
	// held some of the prompt), miss (the prompt was indexed and the
	// chosen replica held none of it), capped (a replica held more of it
	// but was over its load bound), unindexed (no prompt blocks: no
	// prompt, too long, or not JSON).
	Picks *prometheus.CounterVec
	// Blocks counts prompt blocks routed, by whether the chosen replica was
	// believed to hold them (hit) or not (miss): the predicted prefix-cache
	// hit ratio.
	Blocks *prometheus.CounterVec
	// ScrapeErrors counts failed /metrics scrapes by reason.
	ScrapeErrors *prometheus.CounterVec
	// Sync counts index updates shared with other gateways by direction
	// and result.
	Sync *prometheus.CounterVec
	// IndexEntries is the number of blocks in a pool's index.
	IndexEntries *prometheus.GaugeVec
}

// NewMetrics registers kv_aware's metrics on reg (a private registry if
// nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_kv_route_picks_total",
			Help: "kv_aware routing decisions, by pool and outcome (hit, miss, capped, unindexed).",
		}, []string{"pool", "outcome"}),
		Blocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_kv_route_prefix_blocks_total",
			Help: "Prompt blocks routed by kv_aware, by whether the chosen replica was believed to hold them (hit) or not (miss).",
		}, []string{"pool", "result"}),
		ScrapeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_kv_scrape_errors_total",
			Help: "Failed scrapes of replicas' /metrics by kv_aware, by pool and reason (connect, status, timeout, too_large, malformed, no_metrics).",
		}, []string{"pool", "reason"}),
		Sync: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_kv_index_sync_total",
			Help: "Prefix-index updates shared between gateways, by pool, direction (sent, received) and result (ok, dropped, error).",
		}, []string{"pool", "direction", "result"}),
		IndexEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_kv_index_entries",
			Help: "Prompt blocks held in a pool's kv_aware prefix index.",
		}, []string{"pool"}),
	}
	reg.MustRegister(m.Picks, m.Blocks, m.ScrapeErrors, m.Sync, m.IndexEntries)
	return m
}

// poolMetrics are one pool's children.
type poolMetrics struct {
	hit, miss, capped, unindexed prometheus.Counter
	blocksHit, blocksMiss        prometheus.Counter
	scrapeErrors                 *prometheus.CounterVec
	sentOK, sentDropped, sentErr prometheus.Counter
	recvOK, recvErr              prometheus.Counter
	entries                      prometheus.Gauge
}

func (m *Metrics) forPool(pool string) *poolMetrics {
	return &poolMetrics{
		hit:          m.Picks.WithLabelValues(pool, "hit"),
		miss:         m.Picks.WithLabelValues(pool, "miss"),
		capped:       m.Picks.WithLabelValues(pool, "capped"),
		unindexed:    m.Picks.WithLabelValues(pool, "unindexed"),
		blocksHit:    m.Blocks.WithLabelValues(pool, "hit"),
		blocksMiss:   m.Blocks.WithLabelValues(pool, "miss"),
		scrapeErrors: m.ScrapeErrors.MustCurryWith(prometheus.Labels{"pool": pool}),
		sentOK:       m.Sync.WithLabelValues(pool, "sent", "ok"),
		sentDropped:  m.Sync.WithLabelValues(pool, "sent", "dropped"),
		sentErr:      m.Sync.WithLabelValues(pool, "sent", "error"),
		recvOK:       m.Sync.WithLabelValues(pool, "received", "ok"),
		recvErr:      m.Sync.WithLabelValues(pool, "received", "error"),
		entries:      m.IndexEntries.WithLabelValues(pool),
	}
}
