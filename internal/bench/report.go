package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a run measured. Counters and distributions cover measured
// requests only (those whose intended send time fell after the warmup).
// Every sent request ends up in exactly one of OK, Failed or Canceled.
type Result struct {
	// Config is the run's configuration as WithDefaults returns it (URL is
	// the full request URL) with the seed filled in; APIKey, Header and
	// Transport are cleared.
	Config Config
	// Start is when the measured interval began (after warmup).
	Start time.Time
	// Elapsed is the measured interval: from Start to the end of the
	// Duration or the end of the last measured request, whichever is later
	// (earlier when interrupted). Rates are per second of Elapsed.
	Elapsed time.Duration
	// Interrupted is set when the run's context was canceled before its end.
	Interrupted bool

	// Sent counts requests started.
	Sent int64
	// OK counts requests answered 2xx with a complete, well-formed body.
	OK int64
	// Failed counts requests that got a non-2xx status or an error; see
	// FailedByStatus and FailedByKind.
	Failed int64
	// Dropped counts open-loop arrivals not sent because MaxInFlight
	// requests were outstanding.
	Dropped int64
	// Canceled counts requests cut off by the interruption of the run.
	Canceled int64
	// FailedByStatus counts failures by HTTP status. Never nil.
	FailedByStatus map[int]int64
	// FailedByKind counts failures without a non-2xx status by kind
	// (KindConnect, KindTimeout, KindOther). Never nil.
	FailedByKind map[string]int64

	// RequestsPerSecond is OK per second of Elapsed.
	RequestsPerSecond float64
	// OutputTokens totals the completion tokens of OK requests: the usage
	// the server reported, or else the content chunks of a stream (the
	// words of a non-streamed response).
	OutputTokens int64
	// PromptTokens totals the prompt tokens of OK requests: the usage the
	// server reported, or else the prompt's word count.
	PromptTokens int64
	// OutputTokensPerSecond is OutputTokens per second of Elapsed.
	OutputTokensPerSecond float64
	// PromptTokensPerSecond is PromptTokens per second of Elapsed.
	PromptTokensPerSecond float64

	// Latency is the end-to-end latency of OK requests, from the intended
	// send time to the last byte (to "data: [DONE]" for a stream).
	Latency Summary
	// TTFT is the time to first token of OK streamed requests that
	// produced content, from the intended send time to the first chunk
	// with content.
	TTFT Summary
	// ITL is the inter-token latency: every gap between successive content
	// chunks of OK streamed requests is one sample.
	ITL Summary

	// TPOT is the time per output token: each OK streamed request with at
	// least two content chunks is one sample, the mean of its gaps.
	TPOT Summary

	// The histograms behind Latency, TTFT, ITL and TPOT, in microseconds
	// (see github.com/HdrHistogram/hdrhistogram-go). Never nil.
	LatencyHistogram, TTFTHistogram, ITLHistogram, TPOTHistogram *hdrhistogram.Histogram

	// Good counts the OK requests that met Config.Goodput; zero when no
	// objective was set.
	Good int64
	// GoodRatio is Good over the finished requests (OK + Failed): the
	// share of requests that met the objective.
	GoodRatio float64
	// GoodPerSecond is Good per second of Elapsed (vLLM's request_goodput).
	GoodPerSecond float64

	// CachedTokens totals the prompt tokens of OK requests that the server
	// reported as cached (usage.prompt_tokens_details.cached_tokens).
	CachedTokens int64
	// CachedTokenRatio is CachedTokens over PromptTokens.
	CachedTokenRatio float64
	// Replicas counts OK requests by the replica that answered them, the
	// value of their InstanceHeader; empty when no response carried it.
	// Never nil.
	Replicas map[string]int64

	// Trace describes the replayed trace; nil for a rate or concurrency
	// run.
	Trace *TraceInfo
}

// TraceInfo describes the trace a run replayed.
type TraceInfo struct {
	// Path is the trace file.
	Path string
	// Format is TraceMooncake or TraceAzure.
	Format string
	// Requests is the number of requests selected for the replay.
	Requests int
	// TokenScale is the trace's token scaling (see TraceOptions).
	TokenScale float64
	// BlockReuseBound is Trace.BlockReuseBound of the selection: the
	// cached share one infinite prefix cache would reach, in trace blocks.
	BlockReuseBound float64
	// TokenReuseBound is Trace.TokenReuseBound: the same in prompt tokens
	// sent, to compare with CachedTokenRatio.
	TokenReuseBound float64
}

// ReplicaLoad returns the busiest replica's share of Replicas over the
// mean share (1 is a perfect spread), or 0 without replicas.
func (r *Result) ReplicaLoad() float64 {
	var total, most int64
	for _, n := range r.Replicas {
		total += n
		most = max(most, n)
	}
	if total == 0 {
		return 0
	}
	return float64(most) * float64(len(r.Replicas)) / float64(total)
}

// Mode is "open" for a fixed-rate run, "closed" for a fixed-concurrency
// one, "trace" for a trace replay.
func (r *Result) Mode() string {
	switch {
	case r.Trace != nil:
		return "trace"
	case r.Config.Rate == 0:
		return "closed"
	}
	return "open"
}

// WriteTable writes the result as an aligned, human-readable summary.
// Latencies are in milliseconds.
func (r *Result) WriteTable(w io.Writer) error {
	var b strings.Builder
	cfg := &r.Config

	target := fmt.Sprintf("POST %s  model %s", cfg.URL, cfg.Model)
	if cfg.Stream {
		target += "  stream"
	}
	var load string
	switch r.Mode() {
	case "trace":
		load = fmt.Sprintf("%s trace %s, %d requests at %s× speed", r.Trace.Format, r.Trace.Path,
			r.Trace.Requests, formatFloat(cfg.TimeScale))
	case "open":
		load = fmt.Sprintf("open loop, %s arrivals at %s req/s", cfg.Arrivals, formatFloat(cfg.Rate))
	default:
		load = fmt.Sprintf("closed loop, %d workers", cfg.Concurrency)
	}
	load += fmt.Sprintf(" for %v", cfg.Duration)
	if cfg.Warmup > 0 {
		load += fmt.Sprintf(" after %v warmup", cfg.Warmup)
	}
	prompts := fmt.Sprintf("%d words", cfg.PromptTokens)
	if cfg.RepeatPrompt {
		prompts += ", the same in every request"
	}
	if cfg.Endpoint != EndpointEmbeddings {
		prompts += fmt.Sprintf(", max %d tokens", cfg.MaxTokens)
	}
	if r.Trace != nil {
		prompts = fmt.Sprintf("from the trace, tokens × %s", formatFloat(r.Trace.TokenScale))
	}
	prompts += fmt.Sprintf(", seed %d", cfg.Seed)
	elapsed := r.Elapsed.Round(10 * time.Millisecond).String()
	if r.Interrupted {
		elapsed += " (interrupted)"
	}
	requests := fmt.Sprintf("sent %d  ok %d  failed %d", r.Sent, r.OK, r.Failed)
	if r.Mode() != "closed" {
		requests += fmt.Sprintf("  dropped %d", r.Dropped)
	}
	if r.Canceled > 0 {
		requests += fmt.Sprintf("  canceled %d", r.Canceled)
	}

	fmt.Fprintf(&b, "%-11s %s\n", "Target", target)
	fmt.Fprintf(&b, "%-11s %s\n", "Load", load)
	fmt.Fprintf(&b, "%-11s %s\n", "Prompts", prompts)
	fmt.Fprintf(&b, "%-11s %s\n", "Elapsed", elapsed)
	fmt.Fprintf(&b, "%-11s %s\n", "Requests", requests)
	if r.Failed > 0 {
		fmt.Fprintf(&b, "%-11s %s\n", "Failures", r.failureList())
	}
	throughput := fmt.Sprintf("%.2f req/s", r.RequestsPerSecond)
	if cfg.Endpoint != EndpointEmbeddings {
		throughput += fmt.Sprintf("  %.1f output tokens/s", r.OutputTokensPerSecond)
	}
	throughput += fmt.Sprintf("  %.1f prompt tokens/s", r.PromptTokensPerSecond)
	fmt.Fprintf(&b, "%-11s %s\n", "Throughput", throughput)
	if !cfg.Goodput.IsZero() {
		slo := strings.ReplaceAll(strings.ReplaceAll(cfg.Goodput.String(), "=", " ≤ "), ",", "ms, ") + "ms"
		fmt.Fprintf(&b, "%-11s %.1f%% of requests met %s (%d, %.2f req/s)\n", "Goodput",
			100*r.GoodRatio, slo, r.Good, r.GoodPerSecond)
	}
	if r.CachedTokens > 0 || r.Trace != nil {
		cache := fmt.Sprintf("%.1f%% of prompt tokens cached (%d of %d)", 100*r.CachedTokenRatio, r.CachedTokens, r.PromptTokens)
		if r.Trace != nil && r.Trace.Format == TraceMooncake {
			cache += fmt.Sprintf("; trace bound %.1f%% of tokens (%.1f%% of blocks)", 100*r.Trace.TokenReuseBound, 100*r.Trace.BlockReuseBound)
		}
		fmt.Fprintf(&b, "%-11s %s\n", "Cache", cache)
	}
	if len(r.Replicas) > 0 {
		fmt.Fprintf(&b, "%-11s %s\n", "Replicas", r.replicaList())
	}
	b.WriteByte('\n')

	// Cells are right-aligned; labels are padded to one width so they
	// line up on the left.
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "ms     \tcount\tmean\tp50\tp90\tp99\tp99.9\tmax\t\n")
	row := func(name string, s Summary) {
		if s.Count == 0 {
			fmt.Fprintf(tw, "%-7s\t0\t-\t-\t-\t-\t-\t-\t\n", name)
			return
		}
		fmt.Fprintf(tw, "%-7s\t%d", name, s.Count)
		for _, d := range []time.Duration{s.Mean, s.P50, s.P90, s.P99, s.P999, s.Max} {
			fmt.Fprintf(tw, "\t%.2f", ms(d))
		}
		fmt.Fprint(tw, "\t\n")
	}
	row("latency", r.Latency)
	if cfg.Stream {
		row("ttft", r.TTFT)
		row("itl", r.ITL)
		if r.TPOT.Count > 0 {
			row("tpot", r.TPOT)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The cells' closing tabs leave padding at the ends of lines.
	for line := range strings.Lines(table.String()) {
		b.WriteString(strings.TrimRight(line, " \n"))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// failureList formats failures by status, then by kind, largest first
// within each.
func (r *Result) failureList() string {
	var parts []string
	statuses := make([]int, 0, len(r.FailedByStatus))
	for s := range r.FailedByStatus {
		statuses = append(statuses, s)
	}
	slices.Sort(statuses)
	for _, s := range statuses {
		parts = append(parts, fmt.Sprintf("HTTP %d: %d", s, r.FailedByStatus[s]))
	}
	for _, k := range []string{KindConnect, KindTimeout, KindOther} {
		if n := r.FailedByKind[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d", k, n))
		}
	}
	return strings.Join(parts, "  ")
}

// replicaList formats each replica's share of requests, by id, and the
// busiest one's load over the mean.
func (r *Result) replicaList() string {
	ids := make([]string, 0, len(r.Replicas))
	var total int64
	for id, n := range r.Replicas {
		ids = append(ids, id)
		total += n
	}
	slices.Sort(ids)
	parts := make([]string, 0, len(ids)+1)
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", id, 100*float64(r.Replicas[id])/float64(total)))
	}
	parts = append(parts, fmt.Sprintf("(max/mean %.2f)", r.ReplicaLoad()))
	return strings.Join(parts, "  ")
}

// SchemaVersion names the layout WriteJSON writes, in its "schema" field. A
// change that renames or removes a field gets a new version.
const SchemaVersion = "sluice.bench/v1"

// jsonResult is the JSON layout of a Result. Durations are milliseconds as
// floats (nanosecond precision); histograms are HdrHistogram V2 compressed,
// base64 encodings of microsecond values, which any HdrHistogram library
// can decode and merge.
type jsonResult struct {
	Schema                string           `json:"schema"`
	Target                string           `json:"target"`
	Config                jsonConfig       `json:"config"`
	Start                 time.Time        `json:"start"`
	ElapsedMS             float64          `json:"elapsed_ms"`
	Interrupted           bool             `json:"interrupted"`
	Sent                  int64            `json:"sent"`
	OK                    int64            `json:"ok"`
	Failed                int64            `json:"failed"`
	Dropped               int64            `json:"dropped"`
	Canceled              int64            `json:"canceled"`
	FailedByStatus        map[int]int64    `json:"failed_by_status"`
	FailedByKind          map[string]int64 `json:"failed_by_kind"`
	RequestsPerSecond     float64          `json:"requests_per_second"`
	OutputTokens          int64            `json:"output_tokens"`
	PromptTokens          int64            `json:"prompt_tokens"`
	OutputTokensPerSecond float64          `json:"output_tokens_per_second"`
	PromptTokensPerSecond float64          `json:"prompt_tokens_per_second"`
	Latency               jsonSummary      `json:"latency_ms"`
	TTFT                  jsonSummary      `json:"ttft_ms"`
	ITL                   jsonSummary      `json:"itl_ms"`
	TPOT                  jsonSummary      `json:"tpot_ms"`
	Histograms            jsonHistograms   `json:"histograms"`
	Good                  int64            `json:"good"`
	GoodRatio             float64          `json:"good_ratio"`
	CachedTokens          int64            `json:"cached_tokens"`
	CachedTokenRatio      float64          `json:"cached_token_ratio"`
	Replicas              map[string]int64 `json:"replica_requests"`
	ReplicaLoad           float64          `json:"replica_max_over_mean"`
	Trace                 *jsonTrace       `json:"trace"`
	vllmResult
}

type jsonTrace struct {
	Path            string  `json:"path"`
	Format          string  `json:"format"`
	Requests        int     `json:"requests"`
	TokenScale      float64 `json:"token_scale"`
	BlockReuseBound float64 `json:"block_reuse_bound"`
	TokenReuseBound float64 `json:"token_reuse_bound"`
}

// vllmResult holds the fields of vLLM's `vllm bench serve` result JSON
// that bench measures too, under vLLM's names, so that tools reading those
// files read these. They are derived from the fields above; ReadJSON
// ignores them.
type vllmResult struct {
	Duration             float64  `json:"duration"`
	Completed            int64    `json:"completed"`
	TotalInputTokens     int64    `json:"total_input_tokens"`
	TotalOutputTokens    int64    `json:"total_output_tokens"`
	RequestThroughput    float64  `json:"request_throughput"`
	RequestGoodput       *float64 `json:"request_goodput"`
	OutputThroughput     float64  `json:"output_throughput"`
	TotalTokenThroughput float64  `json:"total_token_throughput"`
	MeanTTFTMS           float64  `json:"mean_ttft_ms"`
	MedianTTFTMS         float64  `json:"median_ttft_ms"`
	StdTTFTMS            float64  `json:"std_ttft_ms"`
	P90TTFTMS            float64  `json:"p90_ttft_ms"`
	P99TTFTMS            float64  `json:"p99_ttft_ms"`
	MeanTPOTMS           float64  `json:"mean_tpot_ms"`
	MedianTPOTMS         float64  `json:"median_tpot_ms"`
	StdTPOTMS            float64  `json:"std_tpot_ms"`
	P90TPOTMS            float64  `json:"p90_tpot_ms"`
	P99TPOTMS            float64  `json:"p99_tpot_ms"`
	MeanITLMS            float64  `json:"mean_itl_ms"`
	MedianITLMS          float64  `json:"median_itl_ms"`
	StdITLMS             float64  `json:"std_itl_ms"`
	P90ITLMS             float64  `json:"p90_itl_ms"`
	P99ITLMS             float64  `json:"p99_itl_ms"`
	MeanE2ELMS           float64  `json:"mean_e2el_ms"`
	MedianE2ELMS         float64  `json:"median_e2el_ms"`
	StdE2ELMS            float64  `json:"std_e2el_ms"`
	P90E2ELMS            float64  `json:"p90_e2el_ms"`
	P99E2ELMS            float64  `json:"p99_e2el_ms"`
}

// vllm fills vLLM's fields from r.
func (r *Result) vllm() vllmResult {
	v := vllmResult{
		Duration:             r.Elapsed.Seconds(),
		Completed:            r.OK,
		TotalInputTokens:     r.PromptTokens,
		TotalOutputTokens:    r.OutputTokens,
		RequestThroughput:    r.RequestsPerSecond,
		OutputThroughput:     r.OutputTokensPerSecond,
		TotalTokenThroughput: r.OutputTokensPerSecond + r.PromptTokensPerSecond,
	}
	if !r.Config.Goodput.IsZero() {
		g := r.GoodPerSecond
		v.RequestGoodput = &g
	}
	fill := func(s Summary, h *hdrhistogram.Histogram, mean, median, std, p90, p99 *float64) {
		*mean, *median, *p90, *p99 = ms(s.Mean), ms(s.P50), ms(s.P90), ms(s.P99)
		if h != nil && s.Count > 0 {
			*std = h.StdDev() / 1000
		}
	}
	fill(r.TTFT, r.TTFTHistogram, &v.MeanTTFTMS, &v.MedianTTFTMS, &v.StdTTFTMS, &v.P90TTFTMS, &v.P99TTFTMS)
	fill(r.TPOT, r.TPOTHistogram, &v.MeanTPOTMS, &v.MedianTPOTMS, &v.StdTPOTMS, &v.P90TPOTMS, &v.P99TPOTMS)
	fill(r.ITL, r.ITLHistogram, &v.MeanITLMS, &v.MedianITLMS, &v.StdITLMS, &v.P90ITLMS, &v.P99ITLMS)
	fill(r.Latency, r.LatencyHistogram, &v.MeanE2ELMS, &v.MedianE2ELMS, &v.StdE2ELMS, &v.P90E2ELMS, &v.P99E2ELMS)
	return v
}

type jsonConfig struct {
	Mode         string  `json:"mode"`
	Endpoint     string  `json:"endpoint"`
	Model        string  `json:"model"`
	Rate         float64 `json:"rate"`
	Arrivals     string  `json:"arrivals"`
	MaxInFlight  int     `json:"max_in_flight"`
	Concurrency  int     `json:"concurrency"`
	DurationMS   float64 `json:"duration_ms"`
	WarmupMS     float64 `json:"warmup_ms"`
	TimeoutMS    float64 `json:"timeout_ms"`
	Stream       bool    `json:"stream"`
	PromptTokens int     `json:"prompt_tokens"`
	MaxTokens    int     `json:"max_tokens"`
	RepeatPrompt bool    `json:"repeat_prompt"`
	Seed         uint64  `json:"seed"`
	TimeScale    float64 `json:"time_scale"`
	Goodput      jsonSLO `json:"goodput_slo_ms"`
}

// jsonSLO is an SLO in milliseconds; zero is unchecked.
type jsonSLO struct {
	TTFT float64 `json:"ttft"`
	ITL  float64 `json:"itl"`
	E2E  float64 `json:"e2e"`
}

type jsonSummary struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

type jsonHistograms struct {
	Latency string `json:"latency_us"`
	TTFT    string `json:"ttft_us"`
	ITL     string `json:"itl_us"`
	TPOT    string `json:"tpot_us"`
}

// WriteJSON writes the result as one indented JSON object in the layout
// named by SchemaVersion:
//
//	schema, target, start (RFC 3339), elapsed_ms, interrupted,
//	config {mode ("open"|"closed"), endpoint, model, rate, arrivals,
//	        max_in_flight, concurrency, duration_ms, warmup_ms, timeout_ms,
//	        stream, prompt_tokens, max_tokens, repeat_prompt, seed},
//	sent, ok, failed, dropped, canceled,
//	failed_by_status {"<status>": n}, failed_by_kind {"connect"|"timeout"|"other": n},
//	requests_per_second, output_tokens, prompt_tokens, output_tokens_per_second,
//	prompt_tokens_per_second,
//	latency_ms, ttft_ms, itl_ms, tpot_ms {count, min, mean, p50, p90, p99, p99_9, max},
//	histograms {latency_us, ttft_us, itl_us, tpot_us} (HdrHistogram V2 compressed, base64),
//	good, good_ratio, cached_tokens, cached_token_ratio,
//	replica_requests {"<X-Sim-Instance>": n}, replica_max_over_mean,
//	trace (null, or {path, format, requests, token_scale, block_reuse_bound, token_reuse_bound}),
//
// with config also holding time_scale and goodput_slo_ms {ttft, itl, e2e}
// (0 = unchecked); and, under the names of vLLM's `vllm bench serve`
// result JSON: duration (seconds), completed, total_input_tokens,
// total_output_tokens, request_throughput, request_goodput (null without an
// SLO), output_throughput, total_token_throughput, and
// {mean,median,std,p90,p99}_{ttft,tpot,itl,e2el}_ms.
//
// Durations are milliseconds as floats unless named otherwise. ReadJSON
// reads it back.
func (r *Result) WriteJSON(w io.Writer) error {
	c := &r.Config
	j := jsonResult{
		Schema: SchemaVersion,
		Target: r.Config.URL,
		Config: jsonConfig{
			Mode:         r.Mode(),
			Endpoint:     c.Endpoint,
			Model:        c.Model,
			Rate:         c.Rate,
			Arrivals:     c.Arrivals,
			MaxInFlight:  c.MaxInFlight,
			Concurrency:  c.Concurrency,
			DurationMS:   ms(c.Duration),
			WarmupMS:     ms(c.Warmup),
			TimeoutMS:    ms(c.Timeout),
			Stream:       c.Stream,
			PromptTokens: c.PromptTokens,
			MaxTokens:    c.MaxTokens,
			RepeatPrompt: c.RepeatPrompt,
			Seed:         c.Seed,
			TimeScale:    c.TimeScale,
			Goodput:      jsonSLO{TTFT: ms(c.Goodput.TTFT), ITL: ms(c.Goodput.ITL), E2E: ms(c.Goodput.E2E)},
		},
		Start:                 r.Start,
		ElapsedMS:             ms(r.Elapsed),
		Interrupted:           r.Interrupted,
		Sent:                  r.Sent,
		OK:                    r.OK,
		Failed:                r.Failed,
		Dropped:               r.Dropped,
		Canceled:              r.Canceled,
		FailedByStatus:        nonNil(r.FailedByStatus),
		FailedByKind:          nonNil(r.FailedByKind),
		RequestsPerSecond:     r.RequestsPerSecond,
		OutputTokens:          r.OutputTokens,
		PromptTokens:          r.PromptTokens,
		OutputTokensPerSecond: r.OutputTokensPerSecond,
		PromptTokensPerSecond: r.PromptTokensPerSecond,
		Latency:               toJSONSummary(r.Latency),
		TTFT:                  toJSONSummary(r.TTFT),
		ITL:                   toJSONSummary(r.ITL),
		TPOT:                  toJSONSummary(r.TPOT),
		Good:                  r.Good,
		GoodRatio:             r.GoodRatio,
		CachedTokens:          r.CachedTokens,
		CachedTokenRatio:      r.CachedTokenRatio,
		Replicas:              nonNil(r.Replicas),
		ReplicaLoad:           r.ReplicaLoad(),
		vllmResult:            r.vllm(),
	}
	if t := r.Trace; t != nil {
		j.Trace = &jsonTrace{Path: t.Path, Format: t.Format, Requests: t.Requests,
			TokenScale: t.TokenScale, BlockReuseBound: t.BlockReuseBound, TokenReuseBound: t.TokenReuseBound}
	}
	var err error
	for _, h := range []struct {
		dst *string
		h   *hdrhistogram.Histogram
	}{
		{&j.Histograms.Latency, r.LatencyHistogram},
		{&j.Histograms.TTFT, r.TTFTHistogram},
		{&j.Histograms.ITL, r.ITLHistogram},
		{&j.Histograms.TPOT, r.TPOTHistogram},
	} {
		if *h.dst, err = encodeHistogram(h.h); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&j)
}

// ReadJSON reads a result written by WriteJSON.
func ReadJSON(rd io.Reader) (*Result, error) {
	var j jsonResult
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("bench result: %w", err)
	}
	if j.Schema != SchemaVersion {
		return nil, fmt.Errorf("bench result: schema %q, want %q", j.Schema, SchemaVersion)
	}
	c := j.Config
	r := &Result{
		Config: Config{
			URL:          j.Target,
			Endpoint:     c.Endpoint,
			Model:        c.Model,
			Rate:         c.Rate,
			Arrivals:     c.Arrivals,
			MaxInFlight:  c.MaxInFlight,
			Concurrency:  c.Concurrency,
			Duration:     fromMS(c.DurationMS),
			Warmup:       fromMS(c.WarmupMS),
			Timeout:      fromMS(c.TimeoutMS),
			Stream:       c.Stream,
			PromptTokens: c.PromptTokens,
			MaxTokens:    c.MaxTokens,
			RepeatPrompt: c.RepeatPrompt,
			Seed:         c.Seed,
			TimeScale:    c.TimeScale,
			Goodput:      SLO{TTFT: fromMS(c.Goodput.TTFT), ITL: fromMS(c.Goodput.ITL), E2E: fromMS(c.Goodput.E2E)},
		},
		Start:                 j.Start,
		Elapsed:               fromMS(j.ElapsedMS),
		Interrupted:           j.Interrupted,
		Sent:                  j.Sent,
		OK:                    j.OK,
		Failed:                j.Failed,
		Dropped:               j.Dropped,
		Canceled:              j.Canceled,
		FailedByStatus:        nonNil(j.FailedByStatus),
		FailedByKind:          nonNil(j.FailedByKind),
		RequestsPerSecond:     j.RequestsPerSecond,
		OutputTokens:          j.OutputTokens,
		PromptTokens:          j.PromptTokens,
		OutputTokensPerSecond: j.OutputTokensPerSecond,
		PromptTokensPerSecond: j.PromptTokensPerSecond,
		Latency:               fromJSONSummary(j.Latency),
		TTFT:                  fromJSONSummary(j.TTFT),
		ITL:                   fromJSONSummary(j.ITL),
		TPOT:                  fromJSONSummary(j.TPOT),
		Good:                  j.Good,
		GoodRatio:             j.GoodRatio,
		GoodPerSecond:         perSecond(j.Good, fromMS(j.ElapsedMS)),
		CachedTokens:          j.CachedTokens,
		CachedTokenRatio:      j.CachedTokenRatio,
		Replicas:              nonNil(j.Replicas),
	}
	if t := j.Trace; t != nil {
		r.Trace = &TraceInfo{Path: t.Path, Format: t.Format, Requests: t.Requests,
			TokenScale: t.TokenScale, BlockReuseBound: t.BlockReuseBound, TokenReuseBound: t.TokenReuseBound}
	}
	var err error
	if r.LatencyHistogram, err = decodeHistogram(j.Histograms.Latency); err != nil {
		return nil, fmt.Errorf("bench result: latency histogram: %w", err)
	}
	if r.TTFTHistogram, err = decodeHistogram(j.Histograms.TTFT); err != nil {
		return nil, fmt.Errorf("bench result: ttft histogram: %w", err)
	}
	if r.ITLHistogram, err = decodeHistogram(j.Histograms.ITL); err != nil {
		return nil, fmt.Errorf("bench result: itl histogram: %w", err)
	}
	if r.TPOTHistogram, err = decodeHistogram(j.Histograms.TPOT); err != nil {
		return nil, fmt.Errorf("bench result: tpot histogram: %w", err)
	}
	return r, nil
}

func encodeHistogram(h *hdrhistogram.Histogram) (string, error) {
	if h == nil {
		h = newHistogram()
	}
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return "", fmt.Errorf("encode histogram: %w", err)
	}
	return string(b), nil
}

func decodeHistogram(s string) (*hdrhistogram.Histogram, error) {
	if s == "" {
		return newHistogram(), nil
	}
	return hdrhistogram.Decode([]byte(s))
}

func toJSONSummary(s Summary) jsonSummary {
	return jsonSummary{
		Count: s.Count, Min: ms(s.Min), Mean: ms(s.Mean),
		P50: ms(s.P50), P90: ms(s.P90), P99: ms(s.P99), P999: ms(s.P999), Max: ms(s.Max),
	}
}

func fromJSONSummary(s jsonSummary) Summary {
	return Summary{
		Count: s.Count, Min: fromMS(s.Min), Mean: fromMS(s.Mean),
		P50: fromMS(s.P50), P90: fromMS(s.P90), P99: fromMS(s.P99), P999: fromMS(s.P999), Max: fromMS(s.Max),
	}
}

// ms converts d to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fromMS converts float milliseconds back to a Duration, to the nearest
// nanosecond.
func fromMS(v float64) time.Duration {
	return time.Duration(math.Round(v * float64(time.Millisecond)))
}

// formatFloat prints v without a trailing ".0" for whole numbers.
func formatFloat(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", v)
}

func nonNil[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}
