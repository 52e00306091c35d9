package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The trace scenario (issue 13): one hour of a production LLM service (the
// Azure LLM inference trace 2023, conversation) replayed against three
// process pools of sims with a realistic start time — sluice's autoscaler,
// a fixed pool sized for the peak and one sized for the mean — with the
// same arrivals, prompts and output lengths for each.
//
// Scaled to fit two shared cores: time runs traceSpeedup× faster, one
// request in traceKeep is kept (every traceKeep-th, in arrival order, so
// the rate's shape stays), and prompt and output tokens are divided by
// traceTokenDiv. The sims' start time and the autoscaler's windows are in
// the compressed time: a 3s start stands for 90s of loading a model.

const (
	traceSpeedup  = 30
	traceKeep     = 5
	traceTokenDiv = 8
	// traceStartup is a new replica's start time (--startup-delay).
	traceStartup = 3 * time.Second
	// traceBatch is a sim's batch (--max-running) and the pool's
	// max_concurrency per replica.
	traceBatch = 4
	// traceTarget is the load per replica the fixed pools are sized for
	// and the autoscaler aims at: 3 of 4 slots.
	traceTarget = 3.0
	// traceTTFTSLO and the per-token budget are the objectives: the first
	// token within 500ms, and the whole answer within that plus
	// traceTPOTSLO per output token (1.5× the sims' ITL, which a full
	// batch stretches by 1.375×).
	traceTTFTSLO = 500 * time.Millisecond
	traceTPOTSLO = 30 * time.Millisecond
	// tracePeakWindow is the window the peak rate is measured over: one
	// minute of the original trace.
	tracePeakWindow = time.Minute / traceSpeedup
	// traceWarmup is how much of the trace's start is replayed, unmeasured,
	// before the measured replay.
	traceWarmup = 20 * time.Second
)

// traceSimFlags are the trace pools' sims: 20ms to the first token plus
// 50µs per prompt token, 20ms per output token, a batch of traceBatch.
var traceSimFlags = []string{"--ttft", "20ms", "--prefill-per-token", "50us", "--itl", "20ms", "--max-running", strconv.Itoa(traceBatch)}

// traceAutoscale is the autoscaler's configuration in the trace scenario
// (max is added). docs/autoscaling.md says why each value.
const traceAutoscale = "min: 2, target_concurrency: 3.5, stable_window: 12s, panic_window: 3s, panic_threshold: 2, scale_down_delay: 10s"

// traceRequest is one request of the scaled trace.
type traceRequest struct {
	At             time.Duration
	Prompt, Output int
}

// loadAzureTrace reads the Azure LLM trace (TIMESTAMP,ContextTokens,
// GeneratedTokens) and scales it: offsets from the first request divided by
// speedup, every keep-th request, tokens divided by div (at least 1).
func loadAzureTrace(path string, speedup, keep, div int) ([]traceRequest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var out []traceRequest
	var first time.Time
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if line == 1 || text == "" {
			continue // header
		}
		fields := strings.Split(text, ",")
		if len(fields) != 3 {
			return nil, fmt.Errorf("trace %s:%d: want 3 fields, got %q", path, line, text)
		}
		t, err := time.Parse("2006-01-02 15:04:05.999999999", fields[0])
		if err != nil {
			return nil, fmt.Errorf("trace %s:%d: %w", path, line, err)
		}
		prompt, err1 := strconv.Atoi(fields[1])
		output, err2 := strconv.Atoi(fields[2])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("trace %s:%d: %w", path, line, err)
		}
		if first.IsZero() {
			first = t
		}
		n++
		if (n-1)%keep != 0 {
			continue
		}
		out = append(out, traceRequest{
			At:     t.Sub(first) / time.Duration(speedup),
			Prompt: max(prompt/div, 1),
			Output: max(output/div, 1),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("trace %s: no requests", path)
	}
	slices.SortStableFunc(out, func(a, b traceRequest) int { return int(a.At - b.At) })
	return out, nil
}

// serviceTime is how long a sim takes for r alone in a batch of about
// three: its prefill plus its decode at ITL stretched by the batch penalty
// (1 + 0.5 × 2/4).
func serviceTime(r traceRequest) time.Duration {
	return 20*time.Millisecond + time.Duration(r.Prompt)*50*time.Microsecond + time.Duration(float64(r.Output)*1.25*float64(20*time.Millisecond))
}

// traceConcurrency is the trace's offered concurrency (Little's law: the
// service time of the requests arriving in each window over the window),
// per window over [0, total).
func traceConcurrency(reqs []traceRequest, window, total time.Duration) []point {
	n := int(math.Ceil(float64(total) / float64(window)))
	work := make([]float64, n)
	for _, r := range reqs {
		if i := int(r.At / window); i >= 0 && i < n {
			work[i] += serviceTime(r).Seconds()
		}
	}
	out := make([]point, n)
	for i, w := range work {
		out[i] = point{T: (time.Duration(i)*window + window/2).Seconds(), V: w / window.Seconds()}
	}
	return out
}

// traceResult is the trace scenario's outcome.
type traceResult struct {
	File         string   `json:"file"`
	Speedup      int      `json:"speedup"`
	Keep         int      `json:"keep_one_in"`
	TokenDiv     int      `json:"token_divisor"`
	Requests     int      `json:"requests"`
	DurationS    float64  `json:"duration_s"`
	MeanPrompt   float64  `json:"mean_prompt_tokens"`
	MeanOutput   float64  `json:"mean_output_tokens"`
	MeanRate     float64  `json:"mean_rps"`
	PeakRate     float64  `json:"peak_rps"`
	MeanConc     float64  `json:"mean_concurrency"`
	PeakConc     float64  `json:"peak_concurrency"`
	StartupMs    float64  `json:"startup_delay_ms"`
	SimFlags     []string `json:"sim_flags"`
	TTFTSLOMs    float64  `json:"ttft_slo_ms"`
	TPOTSLOMs    float64  `json:"tpot_slo_ms"`
	PeakReplicas int      `json:"peak_replicas"`
	MeanReplicas int      `json:"mean_replicas"`
	Autoscale    string   `json:"autoscale"`
	// Offered is the offered concurrency per peak window.
	Offered []point    `json:"offered_concurrency"`
	Configs []traceRun `json:"configs"`
}

// traceRun is the trace against one pool configuration.
type traceRun struct {
	Name     string         `json:"name"`
	Replicas string         `json:"replicas"`
	Config   string         `json:"config"`
	Sent     int            `json:"sent"`
	OK       int            `json:"ok"`
	Failed   map[string]int `json:"failed"`
	// TTFTAttainment, E2EAttainment and SLOAttainment are the shares of
	// all requests that met the TTFT objective, the end-to-end one, and
	// both (a failure meets neither).
	TTFTAttainment num `json:"ttft_attainment"`
	E2EAttainment  num `json:"e2e_attainment"`
	SLOAttainment  num `json:"slo_attainment"`
	// Goodput is requests per second that met both objectives, and
	// GoodTokens their output tokens per second.
	Goodput    float64 `json:"goodput_rps"`
	GoodTokens float64 `json:"goodput_tokens_per_s"`
	TTFT       dist    `json:"ttft"`
	Latency    dist    `json:"latency"`
	// ReplicaSeconds integrates ready replicas over the trace; Alive also
	// counts those starting or draining. VsPeak divides by the peak pool's.
	ReplicaSeconds      float64  `json:"replica_seconds"`
	AliveReplicaSeconds float64  `json:"alive_replica_seconds"`
	VsPeak              num      `json:"replica_seconds_vs_peak"`
	AliveVsPeak         num      `json:"alive_replica_seconds_vs_peak"`
	MaxReady            int      `json:"max_ready"`
	Samples             []sample `json:"samples"`
	// TTFTs keeps each request's send time and TTFT (-1: failed) for the
	// chart.
	TTFTs []ttftAt `json:"ttfts"`
}

// ttftAt is one request's send time and time to first token.
type ttftAt struct {
	AtMs   int64   `json:"at_ms"`
	TTFTMs float64 `json:"ttft_ms"`
}

// meetsTTFT and meetsE2E are the objectives for one record.
func meetsTTFT(r *record) bool { return r.ok() && r.TTFT > 0 && r.TTFT <= traceTTFTSLO }

func meetsE2E(r *record) bool {
	return r.ok() && r.Latency <= traceTTFTSLO+time.Duration(r.Output)*traceTPOTSLO
}

func runTrace(ctx context.Context, e *env, o *options) (*traceResult, error) {
	reqs, err := loadAzureTrace(o.trace, traceSpeedup, traceKeep, traceTokenDiv)
	if err != nil {
		return nil, err
	}
	if o.quick {
		// The first fifth: the shape of the start, for a smoke run.
		reqs = reqs[:len(reqs)/5]
	}
	total := reqs[len(reqs)-1].At + time.Second
	res := &traceResult{
		File: o.trace, Speedup: traceSpeedup, Keep: traceKeep, TokenDiv: traceTokenDiv,
		Requests: len(reqs), DurationS: total.Seconds(), StartupMs: ms(traceStartup),
		SimFlags: traceSimFlags, TTFTSLOMs: ms(traceTTFTSLO), TPOTSLOMs: ms(traceTPOTSLO),
	}
	var prompt, output, work float64
	for _, r := range reqs {
		prompt += float64(r.Prompt)
		output += float64(r.Output)
		work += serviceTime(r).Seconds()
	}
	res.MeanPrompt, res.MeanOutput = prompt/float64(len(reqs)), output/float64(len(reqs))
	res.MeanRate = float64(len(reqs)) / total.Seconds()
	res.MeanConc = work / total.Seconds()
	res.Offered = traceConcurrency(reqs, tracePeakWindow, total)
	for _, p := range res.Offered {
		res.PeakConc = max(res.PeakConc, p.V)
	}
	counts := make(map[int]int)
	for _, r := range reqs {
		counts[int(r.At/tracePeakWindow)]++
	}
	for _, c := range counts {
		res.PeakRate = max(res.PeakRate, float64(c)/tracePeakWindow.Seconds())
	}
	res.PeakReplicas = int(math.Ceil(res.PeakConc/traceTarget - 1e-9))
	res.MeanReplicas = int(math.Ceil(res.MeanConc/traceTarget - 1e-9))
	maxReplicas := res.PeakReplicas
	if o.autoscaleMax > 0 {
		maxReplicas = o.autoscaleMax
	}
	as := traceAutoscale
	if o.traceAutoscale != "" {
		as = o.traceAutoscale
	}
	res.Autoscale = fmt.Sprintf("{%s, max: %d}", as, maxReplicas)
	e.logf("trace: %d requests over %v (%.1f req/s mean, %.1f peak); offered concurrency %.1f mean, %.1f peak; fixed pools %d and %d",
		len(reqs), total.Round(time.Second), res.MeanRate, res.PeakRate, res.MeanConc, res.PeakConc, res.PeakReplicas, res.MeanReplicas)

	arrivals := make([]time.Duration, len(reqs))
	for i, r := range reqs {
		arrivals[i] = r.At
	}
	configs := []struct {
		name, replicas string
		initial        int
		autoscale      string
	}{
		// The autoscaled pool starts at the mean pool's size, as one that
		// has run all day would meet this hour; the warm-up then lets it
		// settle to what the trace's start needs.
		{"autoscale", fmt.Sprintf("2–%d", maxReplicas), res.MeanReplicas, res.Autoscale},
		{"fixed-peak", fmt.Sprint(res.PeakReplicas), res.PeakReplicas, ""},
		{"fixed-mean", fmt.Sprint(res.MeanReplicas), res.MeanReplicas, ""},
	}
	for _, c := range configs {
		if o.traceConfigs != nil && !o.traceConfigs[c.name] {
			continue
		}
		cfg := tracePoolYAML(c.initial, c.autoscale)
		run := traceRun{Name: c.name, Replicas: c.replicas, Config: cfg, Failed: map[string]int{}}
		g, err := e.startGateway(ctx, "trace-"+c.name, cfg)
		if err != nil {
			return nil, err
		}
		if err := g.waitPool(ctx, c.initial, 30*time.Second); err != nil {
			return nil, err
		}
		// A warm-up: the trace's first traceWarmup, unmeasured, so every
		// pool meets the trace as it would in the middle of a day, the
		// autoscaler sized for the load already there rather than cold at
		// its minimum (the fixed pools start at their size anyway).
		var warm []time.Duration
		for _, r := range reqs {
			if r.At < traceWarmup {
				warm = append(warm, r.At)
			}
		}
		e.logf("trace: warming %s up with the first %v of the trace", c.name, traceWarmup)
		if _, _, err := drive(ctx, plan{
			URL: g.url, Arrivals: warm, Seed: o.seed + 41, Timeout: 60 * time.Second,
			Shape:  func(int) shape { return shape{Stream: true} },
			Tokens: func(i int) (int, int) { return reqs[i].Prompt, reqs[i].Output },
		}); err != nil {
			return nil, err
		}
		e.logf("trace: replaying against %s (%s replicas)", c.name, c.replicas)
		start := time.Now()
		smp := startSampler(ctx, g, start, 250*time.Millisecond)
		recs, t0, err := drive(ctx, plan{
			URL:      g.url,
			Arrivals: arrivals,
			Seed:     o.seed + 40,
			Timeout:  60 * time.Second,
			Shape:    func(int) shape { return shape{Stream: true} },
			Tokens:   func(i int) (int, int) { return reqs[i].Prompt, reqs[i].Output },
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
		good := 0
		var goodTokens float64
		for i := range recs {
			if meetsTTFT(&recs[i]) && meetsE2E(&recs[i]) {
				good++
				goodTokens += float64(recs[i].Output)
			}
		}
		run.TTFTAttainment = num(float64(count(recs, meetsTTFT)) / float64(len(recs)))
		run.E2EAttainment = num(float64(count(recs, meetsE2E)) / float64(len(recs)))
		run.SLOAttainment = num(float64(good) / float64(len(recs)))
		run.Goodput = float64(good) / total.Seconds()
		run.GoodTokens = goodTokens / total.Seconds()
		var ttfts []time.Duration
		for _, r := range recs {
			if r.ok() {
				ttfts = append(ttfts, r.TTFT)
			}
		}
		run.TTFT = distOf(ttfts)
		for _, r := range recs {
			v := ms(r.TTFT)
			if !r.ok() || r.TTFT == 0 {
				v = -1
			}
			run.TTFTs = append(run.TTFTs, ttftAt{AtMs: r.At.Milliseconds(), TTFTMs: v})
		}
		run.Latency = distOf(latencies(recs, isOK))
		run.ReplicaSeconds = integrate(samples, func(s sample) float64 { return float64(s.Ready) }, 0, total)
		run.AliveReplicaSeconds = integrate(samples, func(s sample) float64 { return float64(s.Alive) }, 0, total)
		run.MaxReady = int(maxOf(samples, func(s sample) float64 { return float64(s.Ready) }, 0, total))
		res.Configs = append(res.Configs, run)
		e.logf("trace: %s: SLO attainment %.3f (TTFT %.3f, e2e %.3f), goodput %.1f req/s, %.0f replica-seconds",
			c.name, float64(run.SLOAttainment), float64(run.TTFTAttainment), float64(run.E2EAttainment), run.Goodput, run.ReplicaSeconds)
	}
	var peak, alivePeak float64
	for _, c := range res.Configs {
		if c.Name == "fixed-peak" {
			peak, alivePeak = c.ReplicaSeconds, c.AliveReplicaSeconds
		}
	}
	for i := range res.Configs {
		res.Configs[i].VsPeak = num(ratio(res.Configs[i].ReplicaSeconds, peak))
		res.Configs[i].AliveVsPeak = num(ratio(res.Configs[i].AliveReplicaSeconds, alivePeak))
	}
	return res, nil
}

// tracePoolYAML is a process pool of the trace's sims.
func tracePoolYAML(replicas int, autoscale string) string {
	argv := slices.Concat([]string{"sluice", "sim", "--addr", "127.0.0.1:{port}", "--id", "{id}", "--model", simModel},
		traceSimFlags, []string{"--startup-delay", traceStartup.String()})
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = strconv.Quote(a)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `    max_concurrency: %d
    queue: {size: 4096, timeout: 60s}
    health_check: {path: /health, interval: 1s, timeout: 500ms}
    process:
      command: [%s]
      replicas: %d
      start_timeout: 30s
      stop_timeout: 5s
`, traceBatch, strings.Join(quoted, ", "), replicas)
	if autoscale != "" {
		fmt.Fprintf(&b, "    autoscale: %s\n", autoscale)
	}
	return b.String()
}
