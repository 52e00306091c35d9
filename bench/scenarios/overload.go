package main

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// Overload (issue 4): a pool of two sims behind max_concurrency and a
// bounded queue gets three times what it can serve. Admitted requests must
// all succeed at a bounded latency, the rest must be refused at once with
// 503 and Retry-After, the queue must stay within its size and the
// gateway's memory flat, and goodput must stay at the pool's capacity. The
// same overload without admission control shows what the bound prevents.

const (
	overloadSims      = 2
	overloadPerSim    = simBatch // max_concurrency
	overloadQueue     = 16
	overloadQueueWait = 2 * time.Second
	overloadFactor    = 3.0
)

// overloadResult is the overload scenario's outcome.
type overloadResult struct {
	Sims           int     `json:"sims"`
	MaxConcurrency int     `json:"max_concurrency"`
	QueueSize      int     `json:"queue_size"`
	QueueTimeoutMs float64 `json:"queue_timeout_ms"`
	// Capacity is the pool's throughput (req/s) in a closed loop of
	// exactly as many clients as it has slots, through sluice; Baseline is
	// that loop's latency.
	Capacity float64 `json:"capacity_rps"`
	Baseline dist    `json:"baseline_latency"`
	// Offered is the open-loop rate, OfferedFactor × Capacity.
	Offered       float64 `json:"offered_rps"`
	OfferedFactor float64 `json:"offered_factor"`
	DurationS     float64 `json:"duration_s"`
	// GoodputFromS is where the goodput window starts: the first seconds
	// fill the pool and are left out.
	GoodputFromS float64 `json:"goodput_from_s"`

	Admission   overloadMode `json:"admission"`
	NoAdmission overloadMode `json:"no_admission"`
}

// overloadMode is one overload run: with admission control or without.
type overloadMode struct {
	Config string `json:"config"`
	// ClientTimeoutMs bounds each request; without admission control it
	// ends requests that would otherwise wait far longer.
	ClientTimeoutMs float64 `json:"client_timeout_ms"`
	Sent            int     `json:"sent"`
	OK              int     `json:"ok"`
	// Goodput is successful completions per second in the goodput window;
	// GoodputRatio divides it by Capacity.
	Goodput      float64 `json:"goodput_rps"`
	GoodputRatio num     `json:"goodput_ratio"`
	// Admitted is the latency of successful requests; the ratios divide
	// its percentiles by the baseline's.
	Admitted dist `json:"admitted_latency"`
	P50Ratio num  `json:"p50_ratio"`
	P99Ratio num  `json:"p99_ratio"`
	// Refused counts 503s by error code; RefusalLatency is how long each
	// kind took to arrive; RefusedShare is all 503s over Sent.
	Refused        map[string]int  `json:"refused"`
	RefusalLatency map[string]dist `json:"refusal_latency"`
	RefusedShare   num             `json:"refused_share"`
	// RetryAfterMissing counts 503s without Retry-After.
	RetryAfterMissing int `json:"retry_after_missing"`
	// Failed counts every other failure by kind (timeouts, resets, other
	// statuses).
	Failed map[string]int `json:"failed"`
	// MaxQueueDepth and MaxInFlight are the largest values /api/pools
	// showed; MaxInFlight counts requests in the gateway, waiting or sent.
	MaxQueueDepth int   `json:"max_queue_depth"`
	MaxInFlight   int64 `json:"max_in_flight"`
	// The gateway's resident memory before the overload, its peak in the
	// samples, and after.
	RSSBeforeKiB int64 `json:"rss_before_kib"`
	RSSPeakKiB   int64 `json:"rss_peak_kib"`
	RSSAfterKiB  int64 `json:"rss_after_kib"`

	Samples []sample `json:"samples"`
}

func runOverload(ctx context.Context, e *env, o *options) (*overloadResult, error) {
	res := &overloadResult{
		Sims: overloadSims, MaxConcurrency: overloadPerSim, QueueSize: overloadQueue,
		QueueTimeoutMs: ms(overloadQueueWait), OfferedFactor: overloadFactor,
	}
	duration, goodFrom := 20*time.Second, 3*time.Second
	noAdmTimeout := 10 * time.Second
	baseDur := 8 * time.Second
	if o.quick {
		duration, goodFrom, noAdmTimeout, baseDur = 6*time.Second, 2*time.Second, 4*time.Second, 3*time.Second
	}
	res.DurationS, res.GoodputFromS = duration.Seconds(), goodFrom.Seconds()

	sims, err := e.startSims(ctx, "overload-sim", overloadSims, simFlags)
	if err != nil {
		return nil, err
	}
	defer e.procs.StopAndForget(procsOf(sims)...)

	admission := fmt.Sprintf(`    max_concurrency: %d
    queue: {size: %d, timeout: %s}
    health_check: {path: /health, interval: 1s, timeout: 500ms}
`, overloadPerSim, overloadQueue, overloadQueueWait)
	g, err := e.startGateway(ctx, "overload-admission", admission+backendsYAML(sims))
	if err != nil {
		return nil, err
	}
	if err := g.waitPool(ctx, overloadSims, 10*time.Second); err != nil {
		return nil, err
	}
	e.logf("overload: baseline, closed loop of %d through sluice for %v", overloadSims*overloadPerSim, baseDur)
	base, err := closedLoop(ctx, g.url, overloadSims*overloadPerSim, time.Second, baseDur, o.seed)
	if err != nil {
		return nil, err
	}
	res.Capacity = base.RequestsPerSecond
	res.Baseline = distFromSummary(base.Latency.Count, base.Latency.P50, base.Latency.P90, base.Latency.P99, base.Latency.Max)
	res.Offered = overloadFactor * res.Capacity
	e.logf("overload: capacity %.1f req/s (p50 %v); offering %.1f req/s for %v with admission control", res.Capacity, res.Baseline.P50, res.Offered, duration)

	res.Admission, err = overloadRun(ctx, g, o, res, duration, 10*time.Second, goodFrom)
	if err != nil {
		return nil, err
	}
	res.Admission.Config = admission
	e.procs.StopAndForget(g.Proc)

	noAdmission := `    max_concurrency: 0
    queue: {size: 0}
    health_check: {path: /health, interval: 1s, timeout: 500ms}
`
	g, err = e.startGateway(ctx, "overload-unbounded", noAdmission+backendsYAML(sims))
	if err != nil {
		return nil, err
	}
	defer e.procs.StopAndForget(g.Proc)
	if err := g.waitPool(ctx, overloadSims, 10*time.Second); err != nil {
		return nil, err
	}
	// A short unmeasured run warms the new gateway's connections, so its
	// memory before is comparable with the first gateway's.
	if _, err := closedLoop(ctx, g.url, overloadSims*overloadPerSim, 0, time.Second, o.seed+1); err != nil {
		return nil, err
	}
	e.logf("overload: the same %.1f req/s without admission control (client timeout %v)", res.Offered, noAdmTimeout)
	res.NoAdmission, err = overloadRun(ctx, g, o, res, duration, noAdmTimeout, goodFrom)
	if err != nil {
		return nil, err
	}
	res.NoAdmission.Config = noAdmission
	return res, nil
}

// overloadRun offers res.Offered for duration to g and measures it.
func overloadRun(ctx context.Context, g *gateway, o *options, res *overloadResult, duration, timeout, goodFrom time.Duration) (overloadMode, error) {
	m := overloadMode{ClientTimeoutMs: ms(timeout), Refused: map[string]int{}, RefusalLatency: map[string]dist{}, Failed: map[string]int{}}
	var err error
	if m.RSSBeforeKiB, _, err = procs.RSSKiB(g.Pid()); err != nil {
		return m, err
	}
	start := time.Now()
	smp := startSampler(ctx, g, start, 100*time.Millisecond)
	recs, t0, err := drive(ctx, plan{
		URL:     g.url,
		Phases:  []phase{{Duration: duration, Rate: res.Offered}},
		Seed:    o.seed + 2,
		Timeout: timeout,
	})
	// The sampler keeps going a moment after the load, so the memory after
	// is read once the gateway is idle again.
	sleep(ctx, 500*time.Millisecond)
	samples := smp.stop()
	if err != nil {
		return m, err
	}
	if m.RSSAfterKiB, _, err = procs.RSSKiB(g.Pid()); err != nil {
		return m, err
	}
	shift := t0.Sub(start)
	for i := range samples {
		samples[i].At -= shift // on the load's time axis
	}
	m.Samples = samples

	m.Sent = len(recs)
	m.OK = count(recs, isOK)
	m.Goodput = completionRate(recs, goodFrom, duration)
	m.GoodputRatio = num(ratio(m.Goodput, res.Capacity))
	m.Admitted = distOf(latencies(recs, isOK))
	m.P50Ratio = num(ratio(float64(m.Admitted.P50), float64(res.Baseline.P50)))
	m.P99Ratio = num(ratio(float64(m.Admitted.P99), float64(res.Baseline.P99)))
	refused := 0
	for i := range recs {
		r := &recs[i]
		switch {
		case r.ok():
		case r.Fail == failStatus && r.Status == 503:
			refused++
			m.Refused[r.Code]++
			if !r.RetryAfter {
				m.RetryAfterMissing++
			}
		case r.Fail == failStatus:
			m.Failed[fmt.Sprintf("status %d %s", r.Status, r.Code)]++
		default:
			m.Failed[r.Fail]++
		}
	}
	for code := range m.Refused {
		m.RefusalLatency[code] = distOf(latencies(recs, func(r *record) bool { return r.Status == 503 && r.Code == code }))
	}
	m.RefusedShare = num(ratio(float64(refused), float64(m.Sent)))
	for _, s := range samples {
		m.MaxQueueDepth = max(m.MaxQueueDepth, s.QueueDepth)
		m.MaxInFlight = max(m.MaxInFlight, s.InFlight)
		m.RSSPeakKiB = max(m.RSSPeakKiB, s.RSSKiB)
	}
	return m, nil
}

// distFromSummary builds a dist from internal/bench's percentiles.
func distFromSummary(n int64, p50, p90, p99, maxLat time.Duration) dist {
	return dist{Count: int(n), P50: p50, P90: p90, P99: p99, Max: maxLat}
}

func procsOf(sims []*sim) []*procs.Proc {
	out := make([]*procs.Proc, len(sims))
	for i, s := range sims {
		out[i] = s.Proc
	}
	return out
}
