package main

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Kill a replica under load (issue 4): four sims take steady open-loop
// load at half their capacity, half of it streamed, and one of them is
// killed with SIGKILL part-way. The only client-visible failures allowed are
// streamed requests that had already received events from it: everything
// else is retried on another replica or never sent to the dead one.

const killSims = 4

// killResult is the kill scenario's outcome.
type killResult struct {
	Sims int `json:"sims"`
	// Capacity is the pool's throughput (req/s) in a closed loop of as many
	// clients as it has slots; Rate is the offered load, LoadFactor ×
	// Capacity, half of it streamed.
	Capacity   float64 `json:"capacity_rps"`
	LoadFactor float64 `json:"load_factor"`
	Rate       float64 `json:"rate_rps"`
	DurationS  float64 `json:"duration_s"`
	KillAtS    float64 `json:"kill_at_s"`
	Killed     string  `json:"killed"`
	Config     string  `json:"config"`

	Sent int `json:"sent"`
	OK   int `json:"ok"`
	// Failures counts failed requests by "streamed|non-streamed, kind,
	// before|after bytes, from which replica" (X-Sim-Instance); Expected
	// counts streams that had received bytes from the killed replica (the
	// failures the issue allows), Unexpected the rest.
	Failures   map[string]int `json:"failures"`
	Expected   int            `json:"expected_failures"`
	Unexpected int            `json:"unexpected_failures"`
	// Latency of successful requests sent before the kill (after the
	// first second), in the two seconds after it, and after it; the ratio
	// is after/before p99.
	Before    dist `json:"before"`
	JustAfter dist `json:"just_after"`
	After     dist `json:"after"`
	P99Ratio  num  `json:"p99_ratio_after_before"`
	// ServedAfter counts successes answered by the killed replica that
	// ended after the kill: 0 unless the kill did not take.
	ServedAfter int `json:"served_by_killed_after_kill"`
	// Retries is how many upstream attempts the gateway retried during
	// the load (sluice_retries_total).
	Retries float64 `json:"retries"`
	// KilledState is the killed backend's state in /api/pools at the end.
	KilledState string `json:"killed_state"`

	// Timeline is the p99 latency of successful requests per second of
	// send time; FailuresAt are the send times of failed ones.
	Timeline   []point   `json:"timeline_p99_ms"`
	FailuresAt []float64 `json:"failures_at_s"`
}

func runKill(ctx context.Context, e *env, o *options) (*killResult, error) {
	duration, killAt, baseDur := 15*time.Second, 5*time.Second, 5*time.Second
	if o.quick {
		duration, killAt, baseDur = 6*time.Second, 2*time.Second, 2*time.Second
	}
	res := &killResult{Sims: killSims, LoadFactor: 0.5, DurationS: duration.Seconds(), KillAtS: killAt.Seconds(), Failures: map[string]int{}}
	sims, err := e.startSims(ctx, "kill-sim", killSims, simFlags)
	if err != nil {
		return nil, err
	}
	defer e.procs.StopAndForget(procsOf(sims)...)
	res.Config = fmt.Sprintf(`    max_concurrency: %d
    queue: {size: 256, timeout: 5s}
    health_check: {path: /health, interval: 500ms, timeout: 400ms, unhealthy_threshold: 2}
`, simBatch)
	g, err := e.startGateway(ctx, "kill", res.Config+backendsYAML(sims))
	if err != nil {
		return nil, err
	}
	defer e.procs.StopAndForget(g.Proc)
	if err := g.waitPool(ctx, killSims, 10*time.Second); err != nil {
		return nil, err
	}
	base, err := closedLoop(ctx, g.url, killSims*simBatch, time.Second, baseDur, o.seed+10)
	if err != nil {
		return nil, err
	}
	res.Capacity = base.RequestsPerSecond
	res.Rate = res.LoadFactor * res.Capacity
	victim := sims[2]
	res.Killed = victim.Name
	e.logf("kill: capacity %.1f req/s; %.1f req/s for %v, half streamed; kill -9 %s at %v", res.Capacity, res.Rate, duration, victim.Name, killAt)

	retriesBefore, err := g.counter(ctx, "sluice_retries_total")
	if err != nil {
		return nil, err
	}
	loadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		killedAt time.Time
		killErr  error
	)
	wg.Go(func() {
		select {
		case <-loadCtx.Done():
			killErr = loadCtx.Err()
			return
		case <-time.After(killAt):
		}
		killedAt = time.Now()
		killErr = victim.Kill()
	})
	recs, t0, err := drive(loadCtx, plan{
		URL:    g.url,
		Phases: []phase{{Duration: duration, Rate: res.Rate}},
		Seed:   o.seed + 11,
		Shape:  func(i int) shape { return shape{Stream: i%2 == 1} },
	})
	cancel()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if killErr != nil {
		return nil, killErr
	}
	killOff := killedAt.Sub(t0)
	res.KillAtS = killOff.Seconds()

	res.Sent = len(recs)
	res.OK = count(recs, isOK)
	for i := range recs {
		r := &recs[i]
		if r.ok() {
			if r.Instance == victim.Name && r.end() > killOff {
				res.ServedAfter++
			}
			continue
		}
		mode := "non-streamed"
		if r.Stream {
			mode = "streamed"
		}
		kind := r.Fail
		if r.Fail == failStatus {
			kind = fmt.Sprintf("status %d %s", r.Status, r.Code)
		}
		when := "before any byte"
		if r.GotBytes {
			when = "after bytes"
		}
		from := "from the killed replica"
		if r.Instance != victim.Name {
			from = "from " + cmp.Or(r.Instance, "no replica")
		}
		res.Failures[strings.Join([]string{mode, kind, when, from}, ", ")]++
		if r.Stream && r.GotBytes && r.Instance == victim.Name {
			res.Expected++
		} else {
			res.Unexpected++
		}
		res.FailuresAt = append(res.FailuresAt, r.At.Seconds())
	}
	sort.Float64s(res.FailuresAt)
	res.Before = distOf(latencies(recs, and(isOK, sentIn(time.Second, killOff))))
	res.JustAfter = distOf(latencies(recs, and(isOK, sentIn(killOff, killOff+2*time.Second))))
	res.After = distOf(latencies(recs, and(isOK, sentIn(killOff, duration))))
	res.P99Ratio = num(ratio(float64(res.After.P99), float64(res.Before.P99)))
	res.Timeline = bucketQuantile(recs, isOK, 0.99, time.Second, duration)

	retriesAfter, err := g.counter(ctx, "sluice_retries_total")
	if err != nil {
		return nil, err
	}
	res.Retries = retriesAfter - retriesBefore
	st, err := g.pool(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range st.Backends {
		if strings.HasSuffix(b.URL, victim.addr) {
			res.KilledState = b.State
		}
	}
	return res, nil
}
