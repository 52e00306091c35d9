package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Autoscaling (issue 5): one bursty trace replayed against three process
// pools of sims — sluice's autoscaler, a fixed pool sized for the peak and
// one sized for the mean — comparing the share of requests that meet a
// latency objective with the replica-seconds each spent.

const (
	// replicaUtilization is the load per replica, as a share of its
	// capacity, that the fixed pools are sized for and the trace's base
	// rate runs at.
	replicaUtilization = 0.75
	// targetConcurrency is the autoscaler's target: 3 of a replica's 4
	// batch slots, the same 75%.
	targetConcurrency = 3
	// startupDelay is how long a new replica takes to answer /health,
	// standing in for loading a model.
	startupDelay = 2 * time.Second
	// sloFactor sets the latency objective as a multiple of the unloaded
	// median latency.
	sloFactor = 2.0
)

// autoscaleResult is the autoscaling scenario's outcome.
type autoscaleResult struct {
	StartupDelayMs float64 `json:"startup_delay_ms"`
	// Unloaded is the latency of one request at a time through a
	// one-replica pool; SLO is SLOFactor × its median.
	Unloaded  dist    `json:"unloaded_latency"`
	SLOFactor float64 `json:"slo_factor"`
	SLOMs     float64 `json:"slo_ms"`
	// ReplicaCapacity is one replica's throughput (req/s) in a closed loop
	// of its batch size.
	ReplicaCapacity float64 `json:"replica_capacity_rps"`
	Utilization     float64 `json:"utilization"`
	// The trace: Phases back to back; its base, peak and mean rates.
	Phases   []phase `json:"phases"`
	BaseRate float64 `json:"base_rps"`
	PeakRate float64 `json:"peak_rps"`
	MeanRate float64 `json:"mean_rps"`
	// PeakReplicas and MeanReplicas size the fixed pools: the peak or mean
	// rate over Utilization × ReplicaCapacity, rounded up. The autoscaler
	// runs between 1 and AutoscaleMax replicas with the settings in
	// Autoscale.
	PeakReplicas int    `json:"peak_replicas"`
	MeanReplicas int    `json:"mean_replicas"`
	AutoscaleMax int    `json:"autoscale_max"`
	Autoscale    string `json:"autoscale"`

	Configs []autoscaleRun `json:"configs"`
}

// autoscaleRun is the trace replayed against one pool configuration.
type autoscaleRun struct {
	Name     string `json:"name"`
	Replicas string `json:"replicas"`
	Config   string `json:"config"`
	Sent     int    `json:"sent"`
	OK       int    `json:"ok"`
	// Failed counts failures by kind.
	Failed map[string]int `json:"failed"`
	// SLOAttainment is the share of all requests that succeeded within the
	// objective; BurstAttainment counts only those sent during the bursts,
	// BaseAttainment only those sent outside them.
	SLOAttainment   num `json:"slo_attainment"`
	BurstAttainment num `json:"burst_slo_attainment"`
	BaseAttainment  num `json:"base_slo_attainment"`
	// Looser is the attainment of looser objectives, for the shape of the
	// tail.
	Looser []sloAttainmentAt `json:"looser_slos"`
	// Bursts says how the pool coped with each burst.
	Bursts []burstRecovery `json:"bursts"`
	// Latency is the end-to-end latency of successful requests.
	Latency dist `json:"latency"`
	// ReplicaSeconds integrates ready replicas over the trace;
	// AliveReplicaSeconds also counts replicas starting or draining, which
	// cost a machine as much. VsPeak divides by the peak pool's.
	ReplicaSeconds      float64 `json:"replica_seconds"`
	AliveReplicaSeconds float64 `json:"alive_replica_seconds"`
	VsPeak              num     `json:"replica_seconds_vs_peak"`
	MaxReady            int     `json:"max_ready"`
	// Timeline is p99 latency per two seconds of send time.
	Timeline []point  `json:"timeline_p99_ms"`
	Samples  []sample `json:"samples"`
}

// looserSLOs are the multiples of the unloaded median latency whose
// attainment is reported besides SLOFactor's.
var looserSLOs = []float64{5, 10}

// sloAttainmentAt is the attainment of the objective Factor × the unloaded
// median latency.
type sloAttainmentAt struct {
	Factor     float64 `json:"factor"`
	SLOMs      float64 `json:"slo_ms"`
	Attainment num     `json:"attainment"`
}

// burstRecovery is how a pool coped with one burst of the trace.
type burstRecovery struct {
	StartS    float64 `json:"start_s"`
	DurationS float64 `json:"duration_s"`
	// ReplicasS is how long after the burst began the pool first had as
	// many ready replicas as the burst needs at Utilization; NaN (null)
	// when it never had during the burst.
	ReplicasS num `json:"replicas_after_s"`
	// LatencyS is how long after the burst began the p99 latency of each
	// second's requests came under the objective for the rest of the
	// burst; NaN (null) when the burst's last second was still over it.
	LatencyS num `json:"latency_after_s"`
}

// recoveries measures every phase of phases whose rate is above base.
func recoveries(phases []phase, base float64, need func(rate float64) int, recs []record, samples []sample, slo time.Duration) []burstRecovery {
	var out []burstRecovery
	var start time.Duration
	for _, ph := range phases {
		from, to := start, start+ph.Duration
		start = to
		if ph.Rate <= base {
			continue
		}
		b := burstRecovery{StartS: from.Seconds(), DurationS: ph.Duration.Seconds(), ReplicasS: num(math.NaN()), LatencyS: num(math.NaN())}
		for _, s := range samples {
			if s.At >= from && s.At < to && s.Ready >= need(ph.Rate) {
				b.ReplicasS = num((s.At - from).Seconds())
				break
			}
		}
		// Walk back from the burst's last second while each second's p99
		// meets the objective.
		var shifted []record
		for _, r := range recs {
			if r.At >= from && r.At < to {
				r.At -= from
				shifted = append(shifted, r)
			}
		}
		buckets := bucketQuantile(shifted, func(*record) bool { return true }, 0.99, time.Second, ph.Duration)
		good := len(buckets)
		for good > 0 && buckets[good-1].V <= ms(slo) {
			good--
		}
		if good < len(buckets) {
			b.LatencyS = num(buckets[good].T - 0.5)
		}
		out = append(out, b)
	}
	return out
}

func runAutoscale(ctx context.Context, e *env, o *options) (*autoscaleResult, error) {
	scale, calib := 1.0, 5*time.Second
	if o.quick {
		scale, calib = 0.2, 2*time.Second
	}
	res := &autoscaleResult{StartupDelayMs: ms(startupDelay), SLOFactor: sloFactor, Utilization: replicaUtilization}

	// Calibration: one replica, started the way the scenario starts them.
	g, err := e.startGateway(ctx, "autoscale-calibration", processPoolYAML(1, ""))
	if err != nil {
		return nil, err
	}
	if err := g.waitPool(ctx, 1, 30*time.Second); err != nil {
		return nil, err
	}
	unloaded, err := closedLoop(ctx, g.url, 1, 500*time.Millisecond, calib, o.seed+30)
	if err != nil {
		return nil, err
	}
	full, err := closedLoop(ctx, g.url, simBatch, time.Second, calib, o.seed+31)
	if err != nil {
		return nil, err
	}
	e.procs.StopAndForget(g.Proc)
	res.Unloaded = distFromSummary(unloaded.Latency.Count, unloaded.Latency.P50, unloaded.Latency.P90, unloaded.Latency.P99, unloaded.Latency.Max)
	res.SLOMs = sloFactor * ms(res.Unloaded.P50)
	slo := time.Duration(res.SLOMs * float64(time.Millisecond))
	res.ReplicaCapacity = full.RequestsPerSecond

	res.BaseRate = replicaUtilization * res.ReplicaCapacity
	res.Phases = burstyTrace(res.BaseRate, scale)
	res.PeakRate, res.MeanRate = peakRate(res.Phases), meanRate(res.Phases)
	perReplica := replicaUtilization * res.ReplicaCapacity
	res.PeakReplicas = int(math.Ceil(res.PeakRate/perReplica - 1e-9))
	res.MeanReplicas = int(math.Ceil(res.MeanRate/perReplica - 1e-9))
	res.AutoscaleMax = res.PeakReplicas
	if o.autoscaleMax > 0 {
		res.AutoscaleMax = o.autoscaleMax
	}
	res.Autoscale = fmt.Sprintf("{min: 1, max: %d, target_concurrency: %d, stable_window: 10s, panic_window: 2s, scale_down_delay: 5s}", res.AutoscaleMax, targetConcurrency)
	total := totalDuration(res.Phases)
	e.logf("autoscale: unloaded p50 %v → SLO %v; replica capacity %.1f req/s; trace %v at %.1f–%.1f req/s (mean %.1f); fixed pools %d and %d",
		res.Unloaded.P50, slo, res.ReplicaCapacity, total, res.BaseRate, res.PeakRate, res.MeanRate, res.PeakReplicas, res.MeanReplicas)

	configs := []struct {
		name, replicas string
		initial        int
		autoscale      string
	}{
		{"autoscale", fmt.Sprintf("1–%d", res.AutoscaleMax), 1, res.Autoscale},
		{"fixed-peak", fmt.Sprint(res.PeakReplicas), res.PeakReplicas, ""},
		{"fixed-mean", fmt.Sprint(res.MeanReplicas), res.MeanReplicas, ""},
	}
	for _, c := range configs {
		cfg := processPoolYAML(c.initial, c.autoscale)
		run := autoscaleRun{Name: c.name, Replicas: c.replicas, Config: cfg, Failed: map[string]int{}}
		g, err := e.startGateway(ctx, "autoscale-"+c.name, cfg)
		if err != nil {
			return nil, err
		}
		if err := g.waitPool(ctx, c.initial, 30*time.Second); err != nil {
			return nil, err
		}
		e.logf("autoscale: replaying the trace against %s (%s replicas)", c.name, c.replicas)
		start := time.Now()
		smp := startSampler(ctx, g, start, 250*time.Millisecond)
		recs, t0, err := drive(ctx, plan{
			URL:     g.url,
			Phases:  res.Phases,
			Seed:    o.seed + 32, // the same arrivals for every configuration
			Timeout: 45 * time.Second,
		})
		samples := smp.stop()
		e.procs.StopAndForget(g.Proc)
		if err != nil {
			return nil, err
		}
		shift := t0.Sub(start)
		for i := range samples {
			samples[i].At -= shift
		}
		run.Samples = samples
		run.Sent = len(recs)
		run.OK = count(recs, isOK)
		for i := range recs {
			if r := &recs[i]; !r.ok() {
				k := r.Fail
				if r.Fail == failStatus {
					k = fmt.Sprintf("status %d %s", r.Status, r.Code)
				}
				run.Failed[k]++
			}
		}
		run.SLOAttainment = num(sloAttainment(recs, slo))
		var burst []record
		for _, r := range recs {
			if rateAt(res.Phases, r.At) > res.BaseRate {
				burst = append(burst, r)
			}
		}
		run.BurstAttainment = num(sloAttainment(burst, slo))
		var baseRecs []record
		for _, r := range recs {
			if rateAt(res.Phases, r.At) <= res.BaseRate {
				baseRecs = append(baseRecs, r)
			}
		}
		run.BaseAttainment = num(sloAttainment(baseRecs, slo))
		for _, f := range looserSLOs {
			d := time.Duration(f * float64(res.Unloaded.P50))
			run.Looser = append(run.Looser, sloAttainmentAt{Factor: f, SLOMs: ms(d), Attainment: num(sloAttainment(recs, d))})
		}
		run.Bursts = recoveries(res.Phases, res.BaseRate, func(rate float64) int {
			return int(math.Ceil(rate/perReplica - 1e-9))
		}, recs, samples, slo)
		run.Latency = distOf(latencies(recs, isOK))
		run.ReplicaSeconds = integrate(samples, func(s sample) float64 { return float64(s.Ready) }, 0, total)
		run.AliveReplicaSeconds = integrate(samples, func(s sample) float64 { return float64(s.Alive) }, 0, total)
		run.MaxReady = int(maxOf(samples, func(s sample) float64 { return float64(s.Ready) }, 0, total))
		run.Timeline = bucketQuantile(recs, func(*record) bool { return true }, 0.99, 2*time.Second, total)
		res.Configs = append(res.Configs, run)
		e.logf("autoscale: %s: SLO attainment %.3f (bursts %.3f), p99 %v, %.0f replica-seconds",
			c.name, float64(run.SLOAttainment), float64(run.BurstAttainment), run.Latency.P99, run.ReplicaSeconds)
	}
	peak := res.Configs[1].ReplicaSeconds
	for i := range res.Configs {
		res.Configs[i].VsPeak = num(ratio(res.Configs[i].ReplicaSeconds, peak))
	}
	return res, nil
}

// processPoolYAML is a pool of sims run by sluice: replicas of them, or,
// with autoscale set, as many as the autoscaler decides.
func processPoolYAML(replicas int, autoscale string) string {
	argv := slices.Concat([]string{"sluice", "sim", "--addr", "127.0.0.1:{port}", "--id", "{id}", "--model", simModel},
		simFlags, []string{"--startup-delay", startupDelay.String()})
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `    max_concurrency: %d
    queue: {size: 4096, timeout: 30s}
    health_check: {path: /health, interval: 1s, timeout: 500ms}
    process:
      command: [%s]
      replicas: %d
      start_timeout: 30s
      stop_timeout: 2s
`, simBatch, strings.Join(quoted, ", "), replicas)
	if autoscale != "" {
		fmt.Fprintf(&b, "    autoscale: %s\n", autoscale)
	}
	return b.String()
}
