package main

import (
	"context"
	"fmt"
	"time"
)

// Priorities (issue 4): one replica behind max_concurrency 2 and a deep
// queue is saturated by an even mix of high, normal and low priority
// requests. High must wait least; low must still complete.

const (
	priorityCap     = 2
	priorityQueue   = 200
	priorityTimeout = 30 * time.Second
	priorityFactor  = 1.3
)

var priorityClasses = []string{"high", "normal", "low"}

// priorityResult is the priority scenario's outcome.
type priorityResult struct {
	MaxConcurrency int     `json:"max_concurrency"`
	QueueSize      int     `json:"queue_size"`
	QueueTimeoutMs float64 `json:"queue_timeout_ms"`
	// Capacity is the replica's throughput (req/s) in a closed loop of
	// max_concurrency clients; Baseline is that loop's latency.
	Capacity float64 `json:"capacity_rps"`
	Baseline dist    `json:"baseline_latency"`
	// Offered is the total open-loop rate, Factor × Capacity, a third per
	// class, interleaved.
	Offered   float64 `json:"offered_rps"`
	Factor    float64 `json:"offered_factor"`
	DurationS float64 `json:"duration_s"`
	// MaxQueueDepth is the deepest queue /api/pools showed.
	MaxQueueDepth int `json:"max_queue_depth"`

	Classes []priorityClass `json:"classes"`
}

// priorityClass is one priority's outcome.
type priorityClass struct {
	Priority string `json:"priority"`
	Sent     int    `json:"sent"`
	OK       int    `json:"ok"`
	// Completed is OK / Sent: 1 means no request of the class was refused
	// or timed out.
	Completed num `json:"completed_share"`
	// Latency is the end-to-end latency of successful requests; Wait
	// subtracts the baseline median (the service time), an estimate of
	// time spent queued.
	Latency dist `json:"latency"`
	WaitP50 num  `json:"wait_p50_ms"`
	WaitP99 num  `json:"wait_p99_ms"`
	// P50VsHigh and P99VsHigh divide this class's latency by high's.
	P50VsHigh num `json:"p50_vs_high"`
	P99VsHigh num `json:"p99_vs_high"`
	// Timeline is the median latency per second of send time.
	Timeline []point `json:"timeline_p50_ms"`
}

func runPriorities(ctx context.Context, e *env, o *options) (*priorityResult, error) {
	duration, baseDur := 15*time.Second, 5*time.Second
	if o.quick {
		duration, baseDur = 6*time.Second, 2*time.Second
	}
	res := &priorityResult{MaxConcurrency: priorityCap, QueueSize: priorityQueue, QueueTimeoutMs: ms(priorityTimeout), Factor: priorityFactor, DurationS: duration.Seconds()}
	sims, err := e.startSims(ctx, "priority-sim", 1, simFlags)
	if err != nil {
		return nil, err
	}
	defer e.procs.StopAndForget(procsOf(sims)...)
	g, err := e.startGateway(ctx, "priority", fmt.Sprintf(`    max_concurrency: %d
    queue: {size: %d, timeout: %s}
    health_check: {path: /health, interval: 1s, timeout: 500ms}
`, priorityCap, priorityQueue, priorityTimeout)+backendsYAML(sims))
	if err != nil {
		return nil, err
	}
	defer e.procs.StopAndForget(g.Proc)
	if err := g.waitPool(ctx, 1, 10*time.Second); err != nil {
		return nil, err
	}
	base, err := closedLoop(ctx, g.url, priorityCap, time.Second, baseDur, o.seed+20)
	if err != nil {
		return nil, err
	}
	res.Capacity = base.RequestsPerSecond
	res.Baseline = distFromSummary(base.Latency.Count, base.Latency.P50, base.Latency.P90, base.Latency.P99, base.Latency.Max)
	res.Offered = priorityFactor * res.Capacity
	e.logf("priorities: capacity %.1f req/s; offering %.1f req/s for %v, a third each high, normal, low", res.Capacity, res.Offered, duration)

	start := time.Now()
	smp := startSampler(ctx, g, start, 250*time.Millisecond)
	recs, _, err := drive(ctx, plan{
		URL:     g.url,
		Phases:  []phase{{Duration: duration, Rate: res.Offered}},
		Seed:    o.seed + 21,
		Timeout: priorityTimeout + 10*time.Second,
		Shape:   func(i int) shape { return shape{Priority: priorityClasses[i%len(priorityClasses)]} },
	})
	samples := smp.stop()
	if err != nil {
		return nil, err
	}
	for _, s := range samples {
		res.MaxQueueDepth = max(res.MaxQueueDepth, s.QueueDepth)
	}
	var high dist
	for _, class := range priorityClasses {
		of := func(r *record) bool { return r.Priority == class }
		c := priorityClass{
			Priority: class,
			Sent:     count(recs, of),
			OK:       count(recs, and(of, isOK)),
			Latency:  distOf(latencies(recs, and(of, isOK))),
			Timeline: bucketQuantile(recs, and(of, isOK), 0.5, time.Second, duration),
		}
		c.Completed = num(ratio(float64(c.OK), float64(c.Sent)))
		c.WaitP50 = num(max(ms(c.Latency.P50)-ms(res.Baseline.P50), 0))
		c.WaitP99 = num(max(ms(c.Latency.P99)-ms(res.Baseline.P50), 0))
		if class == "high" {
			high = c.Latency
		}
		c.P50VsHigh = num(ratio(float64(c.Latency.P50), float64(high.P50)))
		c.P99VsHigh = num(ratio(float64(c.Latency.P99), float64(high.P99)))
		res.Classes = append(res.Classes, c)
	}
	return res, nil
}
