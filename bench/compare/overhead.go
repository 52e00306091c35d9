package main

import (
	"context"
	"time"

	"github.com/sluice-ai/sluice/internal/bench"
)

// overheadResult is the overhead scenario: a tiny fast backend, direct and
// through each proxy.
type overheadResult struct {
	Rows  []*overheadRow `json:"rows"`
	Error string         `json:"error,omitempty"`
}

// overheadRow is one target of the overhead scenario. RPS, P50 and P99 are
// the best of the rounds (see bestOf); ratios and added latencies are
// against the direct row's.
type overheadRow struct {
	Target string `json:"target"`
	Error  string `json:"error,omitempty"`

	Wrk             []wrkResult `json:"wrk_rounds"`
	RPS             float64     `json:"requests_per_second"`
	ThroughputRatio float64     `json:"throughput_ratio"`
	WrkErrors       int64       `json:"wrk_errors"`

	Latency  []dist  `json:"latency_rounds"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	AddedP50 float64 `json:"added_p50_ms"`
	AddedP99 float64 `json:"added_p99_ms"`
	Failed   int64   `json:"latency_failed"`

	url string
}

// overhead measures, for the backend directly and through each proxy,
// closed-loop throughput (wrk) and open-loop latency at a moderate rate.
func (s *suite) overhead(ctx context.Context) *overheadResult {
	res := &overheadResult{}
	backend, err := s.startBackend(ctx)
	if err != nil {
		res.Error = s.scenarioFailed(ctx, "overhead", err)
		return res
	}
	defer backend.stop(s)

	res.Rows = append(res.Rows, &overheadRow{Target: "direct", url: backend.URL})
	ref := &overheadRow{Target: goProxyTarget}
	res.Rows = append(res.Rows, ref)
	if in, err := s.startGoProxy(ctx, backend); err != nil {
		ref.Error = s.scenarioFailed(ctx, "overhead", err)
	} else {
		defer in.stop(s)
		ref.url = in.URL
	}
	for _, p := range s.enabledProxies() {
		levels := []string{"warn"}
		if p.Name == "sluice" {
			levels = append(levels, "info")
		}
		for _, level := range levels {
			row := &overheadRow{Target: p.Name}
			if level == "info" {
				row.Target = "sluice (access log)"
			}
			res.Rows = append(res.Rows, row)
			in, err := s.startProxy(ctx, p, p.Default, []string{backend.host()}, level)
			if err != nil {
				row.Error = s.scenarioFailed(ctx, "overhead", err)
				continue
			}
			defer in.stop(s)
			row.url = in.URL
		}
	}

	o := s.opts
	for round := range o.rounds {
		for _, row := range rotate(res.Rows, round) {
			if row.url == "" || ctx.Err() != nil {
				continue
			}
			s.logf("overhead: round %d/%d wrk -c%d %v -> %s", round+1, o.rounds, o.wrkConns, o.wrkDuration, row.Target)
			if o.warmup > 0 {
				if _, err := s.runWrk(ctx, row.url, o.warmup); err != nil {
					row.Error = s.scenarioFailed(ctx, "overhead "+row.Target, err)
					continue
				}
			}
			w, err := s.runWrk(ctx, row.url, o.wrkDuration)
			if err != nil {
				row.Error = s.scenarioFailed(ctx, "overhead "+row.Target, err)
				continue
			}
			row.Wrk = append(row.Wrk, w)
		}
	}
	for round := range o.rounds {
		for _, row := range rotate(res.Rows, round) {
			if row.url == "" || ctx.Err() != nil {
				continue
			}
			s.logf("overhead: round %d/%d open loop %.0f req/s %v -> %s", round+1, o.rounds, o.latencyRate, o.latencyDuration, row.Target)
			r, err := bench.Run(ctx, bench.Config{
				URL:          row.url,
				Model:        "sim-llm",
				Rate:         o.latencyRate,
				Duration:     o.latencyDuration,
				Warmup:       o.warmup,
				Timeout:      10 * time.Second,
				PromptTokens: 16,
				MaxTokens:    16,
				Seed:         uint64(round + 1),
			}, nil)
			if err != nil {
				row.Error = s.scenarioFailed(ctx, "overhead "+row.Target, err)
				continue
			}
			row.Latency = append(row.Latency, distOf(r.Latency))
			row.Failed += r.Failed + r.Dropped
		}
	}
	if ctx.Err() != nil {
		res.Error = ctx.Err().Error()
	}
	summarizeOverhead(res.Rows)
	return res
}

// summarizeOverhead fills each row's best-of-rounds values, and its ratio
// and added latency against the direct row (the first).
func summarizeOverhead(rows []*overheadRow) {
	for _, row := range rows {
		var rps, p50, p99 []float64
		row.WrkErrors = 0
		for _, w := range row.Wrk {
			rps = append(rps, w.RequestsPerS)
			row.WrkErrors += w.Non2xx + w.SocketErrors
		}
		for _, d := range row.Latency {
			p50 = append(p50, d.P50)
			p99 = append(p99, d.P99)
		}
		row.RPS, row.P50, row.P99 = bestOf(rps, true), bestOf(p50, false), bestOf(p99, false)
	}
	if len(rows) == 0 {
		return
	}
	direct := rows[0]
	for _, row := range rows {
		if direct.RPS > 0 && row.RPS > 0 {
			row.ThroughputRatio = row.RPS / direct.RPS
		}
		if len(direct.Latency) > 0 && len(row.Latency) > 0 {
			row.AddedP50 = row.P50 - direct.P50
			row.AddedP99 = row.P99 - direct.P99
		}
	}
}

// rotate returns rows starting at index round (mod len), so that over the
// rounds each target runs early and late and a drift in the machine's
// background load does not always hit the same one.
func rotate[T any](rows []T, round int) []T {
	if len(rows) == 0 {
		return rows
	}
	k := round % len(rows)
	out := make([]T, 0, len(rows))
	out = append(out, rows[k:]...)
	return append(out, rows[:k]...)
}

// row lookup by target name, for the targets and charts.
func (r *overheadResult) row(target string) *overheadRow {
	if r == nil {
		return nil
	}
	for _, row := range r.Rows {
		if row.Target == target {
			return row
		}
	}
	return nil
}

func (r *overheadRow) measured() bool {
	return r != nil && r.Error == "" && len(r.Wrk) > 0 && len(r.Latency) > 0
}
