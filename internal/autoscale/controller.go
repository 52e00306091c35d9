package autoscale

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-ai/sluice/internal/config"
)

// Actuator starts and stops a pool's replicas: local processes
// (replicas.ProcessSet) or, later, a Kubernetes workload's scale
// subresource.
type Actuator interface {
	// Scale sets the replica count to aim for. It returns once the new
	// count is recorded, not when the replicas are ready.
	Scale(ctx context.Context, n int) error
	// Desired is the replica count the actuator aims for now; an actuator
	// shared with other writers (kubectl scale) reports theirs too.
	Desired() int
}

// Metrics are the autoscaler's metric families, shared by the controllers
// of all pools.
type Metrics struct {
	desired  *prometheus.GaugeVec // sluice_autoscaler_desired_replicas{pool}
	mins     *prometheus.GaugeVec // sluice_autoscaler_min_replicas{pool}
	maxes    *prometheus.GaugeVec // sluice_autoscaler_max_replicas{pool}
	panic    *prometheus.GaugeVec // sluice_autoscaler_panic{pool}
	demand   *prometheus.GaugeVec // sluice_autoscaler_demand{pool,window}
	forecast *prometheus.GaugeVec // sluice_autoscaler_forecast_replicas{pool}
	boost    *prometheus.GaugeVec // sluice_autoscaler_slo_boost{pool}
	ttft     *prometheus.GaugeVec // sluice_autoscaler_ttft_seconds{pool}
	replicas *prometheus.GaugeVec // sluice_autoscaler_replica_load{pool,signal}
}

// NewMetrics creates the families and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_desired_replicas", Help: "Replicas the autoscaler wants for a pool.",
		}, []string{"pool"}),
		mins: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_min_replicas", Help: "A pool's autoscale.min.",
		}, []string{"pool"}),
		maxes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_max_replicas", Help: "A pool's autoscale.max: desired replicas at it means the pool cannot grow further.",
		}, []string{"pool"}),
		panic: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_panic", Help: "1 while a pool's autoscaler is in panic mode (scaling up only), else 0.",
		}, []string{"pool"}),
		demand: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_demand", Help: "A pool's demand (in-flight + waiting requests + pending jobs): the last sample, its stable- and panic-window averages, and the forecast peak (window=sample|stable|panic|predicted).",
		}, []string{"pool", "window"}),
		forecast: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_forecast_replicas", Help: "Replicas the seasonal forecast asks for before a new replica could be ready (0 without a forecast).",
		}, []string{"pool"}),
		boost: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_slo_boost", Help: "Factor the SLO feedback divides target_concurrency by (1 while the TTFT objective is met).",
		}, []string{"pool"}),
		ttft: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_ttft_seconds", Help: "Time to first token the SLO feedback last observed, at the objective's percentile.",
		}, []string{"pool"}),
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_autoscaler_replica_load", Help: "What the replicas' /metrics report, summed (signal=running|waiting|kv_cache).",
		}, []string{"pool", "signal"}),
	}
	reg.MustRegister(m.desired, m.mins, m.maxes, m.panic, m.demand, m.forecast, m.boost, m.ttft, m.replicas)
	return m
}

// poolGauges are one pool's handles into Metrics.
type poolGauges struct {
	desired, panic                     prometheus.Gauge
	min, max                           prometheus.Gauge
	sample, stable, panicW, prediction prometheus.Gauge
	forecast, boost, ttft              prometheus.Gauge
	running, waiting, kv               prometheus.Gauge
}

func (m *Metrics) forPool(pool string) *poolGauges {
	return &poolGauges{
		desired:    m.desired.WithLabelValues(pool),
		min:        m.mins.WithLabelValues(pool),
		max:        m.maxes.WithLabelValues(pool),
		panic:      m.panic.WithLabelValues(pool),
		sample:     m.demand.WithLabelValues(pool, "sample"),
		stable:     m.demand.WithLabelValues(pool, "stable"),
		panicW:     m.demand.WithLabelValues(pool, "panic"),
		prediction: m.demand.WithLabelValues(pool, "predicted"),
		forecast:   m.forecast.WithLabelValues(pool),
		boost:      m.boost.WithLabelValues(pool),
		ttft:       m.ttft.WithLabelValues(pool),
		running:    m.replicas.WithLabelValues(pool, "running"),
		waiting:    m.replicas.WithLabelValues(pool, "waiting"),
		kv:         m.replicas.WithLabelValues(pool, "kv_cache"),
	}
}

// Forget drops a pool's series (when the pool is removed from the config).
func (m *Metrics) Forget(pool string) {
	m.desired.DeleteLabelValues(pool)
	m.mins.DeleteLabelValues(pool)
	m.maxes.DeleteLabelValues(pool)
	m.panic.DeleteLabelValues(pool)
	m.demand.DeletePartialMatch(prometheus.Labels{"pool": pool})
	m.forecast.DeleteLabelValues(pool)
	m.boost.DeleteLabelValues(pool)
	m.ttft.DeleteLabelValues(pool)
	m.replicas.DeletePartialMatch(prometheus.Labels{"pool": pool})
}

// ControllerOptions are the parts of a controller that come from its owner.
type ControllerOptions struct {
	// Inputs returns what the gateway knows about the pool's load now; the
	// controller adds the replicas' /metrics (when Targets is set) and
	// computes Demand with the pool's current config. One of Inputs and
	// Demand is required; Inputs wins.
	Inputs func() Inputs
	// Demand returns the pool's demand now, used as is (no LLM signals).
	Demand func() float64
	// Targets returns the base URLs of the pool's ready replicas, whose
	// /metrics are read every signals.scrape_interval when a signal or the
	// SLO needs them. Nil: not read.
	Targets func() []string
	// TTFT returns the time to first token the gateway observed over the
	// last panic window at slo.percentile (0: none). Nil: the replicas'
	// own vllm:time_to_first_token_seconds (needs Targets).
	TTFT func() time.Duration
	// Ready returns the pool's replicas that take traffic now. Required.
	Ready func() int
	// StartupTime returns how long a new replica takes to become ready;
	// the predictive floor looks that far ahead. Nil: 0 (one tick ahead).
	StartupTime func() time.Duration
	// Tick is how often demand is sampled and a decision made. Default
	// DefaultTick (1s).
	Tick time.Duration
	// Logger receives each decision that changes the replica count, and
	// panic-mode changes. Nil discards.
	Logger *slog.Logger
	// Clock drives the ticks. Nil is the real clock.
	Clock clockwork.Clock
	// Metrics receives the pool's autoscaler gauges. Nil exports none.
	Metrics *Metrics
}

// Controller runs the autoscaler of one pool: every tick it samples demand,
// asks its Scaler for a decision, and tells the Actuator when the count
// changes. Create it with NewController and call Run.
type Controller struct {
	pool   string
	act    Actuator
	opts   ControllerOptions
	gauges *poolGauges

	scraper *ReplicaScraper // nil without Targets

	mu     sync.Mutex
	scaler *Scaler
	last   Decision
	ran    bool
}

// NewController returns a controller that scales act for pool by cfg.
func NewController(pool string, cfg config.Autoscale, act Actuator, opts ControllerOptions) (*Controller, error) {
	if act == nil || (opts.Demand == nil && opts.Inputs == nil) || opts.Ready == nil {
		return nil, errors.New("autoscale: controller needs an actuator, Inputs or Demand, and Ready")
	}
	if opts.Tick <= 0 {
		opts.Tick = DefaultTick
	}
	if opts.StartupTime == nil {
		opts.StartupTime = func() time.Duration { return 0 }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	c := &Controller{pool: pool, act: act, opts: opts, scaler: NewScaler(cfg, opts.Tick)}
	if opts.Metrics != nil {
		c.gauges = opts.Metrics.forPool(pool)
	}
	if opts.Targets != nil {
		c.scraper = NewScraper(ScraperOptions{
			Targets:  opts.Targets,
			Interval: cfg.Signals.ScrapeInterval.D(),
			Quantile: cfg.SLO.Percentile,
			Clock:    opts.Clock,
			Logger:   opts.Logger,
		})
	}
	c.train(cfg)
	return c, nil
}

// train feeds the predictive.history file to a new forecast. A history
// that cannot be read is logged: the forecast then learns from live
// demand, as without one.
func (c *Controller) train(cfg config.Autoscale) {
	f := c.scaler.Forecast()
	if f == nil || cfg.Predictive.History == "" || f.Ready() {
		return
	}
	n, err := TrainFromFile(f, cfg.Predictive.History, c.opts.Clock.Now())
	if err != nil {
		c.opts.Logger.Warn("autoscale: predictive history not used", "pool", c.pool, "err", err)
		return
	}
	c.opts.Logger.Info("autoscale: forecast trained from history", "pool", c.pool, "samples", n, "ready", f.Ready())
}

// needsReplicaMetrics reports whether cfg reads the replicas' /metrics.
func (c *Controller) needsReplicaMetrics(cfg config.Autoscale) bool {
	return cfg.Signals.ReplicaQueue > 0 || cfg.Signals.KVCache > 0 || (cfg.SLO.TTFT > 0 && c.opts.TTFT == nil)
}

// Reconfigure applies a reloaded autoscale config. The windows start over
// (the running count is held for one scale-down delay, as at start); a
// forecast of the same season is kept.
func (c *Controller) Reconfigure(cfg config.Autoscale) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reflect.DeepEqual(cfg, c.scaler.Config()) {
		return
	}
	s := NewScaler(cfg, c.opts.Tick)
	s.AdoptForecast(c.scaler)
	c.scaler = s
	c.train(cfg)
}

// Last is the latest decision, and false before the first one.
func (c *Controller) Last() (Decision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.ran
}

// Run decides once at once and then every tick, until ctx ends; it returns
// nil then. A failed Scale is logged and tried again at the next tick.
func (c *Controller) Run(ctx context.Context) error {
	if c.scraper != nil {
		var wg sync.WaitGroup
		sctx, cancel := context.WithCancel(ctx)
		defer wg.Wait()
		defer cancel()
		wg.Go(func() { c.scrapeLoop(sctx) })
	}
	t := c.opts.Clock.NewTicker(c.opts.Tick)
	defer t.Stop()
	for {
		c.Step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		}
	}
}

// scrapeLoop reads the replicas' /metrics while the config needs them.
func (c *Controller) scrapeLoop(ctx context.Context) {
	t := c.opts.Clock.NewTicker(c.scraper.opts.Interval)
	defer t.Stop()
	for {
		c.mu.Lock()
		need := c.needsReplicaMetrics(c.scaler.Config())
		c.mu.Unlock()
		if need {
			c.scraper.Scrape(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

// sample gathers the inputs of one decision under cfg.
func (c *Controller) sample(cfg *config.Autoscale) Sample {
	in := Sample{
		Ready:       c.opts.Ready(),
		Current:     c.act.Desired(),
		StartupTime: c.opts.StartupTime(),
	}
	var load ReplicaLoad
	if c.scraper != nil {
		load = c.scraper.Load()
	}
	if c.opts.Inputs != nil {
		inputs := c.opts.Inputs()
		inputs.Replicas = load
		in.Demand = Demand(cfg, inputs)
	} else {
		in.Demand = c.opts.Demand()
	}
	if c.opts.TTFT != nil {
		in.TTFT = c.opts.TTFT()
	} else {
		in.TTFT = load.TTFT
	}
	if g := c.gauges; g != nil {
		g.running.Set(load.Running)
		g.waiting.Set(load.Waiting)
		g.kv.Set(load.KVCache)
	}
	return in
}

// Step samples, decides and actuates once. Run calls it every tick; it is
// exported for owners that drive their own loop.
func (c *Controller) Step(ctx context.Context) Decision {
	c.mu.Lock()
	cfg := c.scaler.Config()
	c.mu.Unlock()
	in := c.sample(&cfg)
	c.mu.Lock()
	prev, ran := c.last, c.ran
	d := c.scaler.Decide(c.opts.Clock.Now(), in)
	c.last, c.ran = d, true
	c.mu.Unlock()

	log := c.opts.Logger
	if d.Panic != prev.Panic && ran {
		if d.Panic {
			log.Warn("autoscaler panic: scaling up only", "pool", c.pool, "panic_demand", round2(d.PanicDemand), "ready", d.Ready)
		} else {
			log.Info("autoscaler calm", "pool", c.pool, "stable_demand", round2(d.StableDemand))
		}
	}
	if d.Desired != in.Current {
		log.Info("autoscale", "pool", c.pool, "from", in.Current, "to", d.Desired, "rule", d.Rule, "reason", d.Reason,
			"demand", round2(d.Demand), "stable_demand", round2(d.StableDemand), "panic_demand", round2(d.PanicDemand),
			"ready", d.Ready, "predicted_floor", d.PredictedFloor)
		if err := c.act.Scale(ctx, d.Desired); err != nil {
			log.Warn("autoscale: scaling failed; will retry", "pool", c.pool, "to", d.Desired, "err", err)
		}
	}
	if g := c.gauges; g != nil {
		g.min.Set(float64(cfg.Min))
		g.max.Set(float64(cfg.Max))
		g.desired.Set(float64(d.Desired))
		g.panic.Set(boolFloat(d.Panic))
		g.sample.Set(d.Demand)
		g.stable.Set(d.StableDemand)
		g.panicW.Set(d.PanicDemand)
		g.prediction.Set(d.PredictedDemand)
		g.forecast.Set(float64(d.PredictedFloor))
		g.boost.Set(max(d.SLOBoost, 1))
		g.ttft.Set(d.TTFT.Seconds())
	}
	return d
}

func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
