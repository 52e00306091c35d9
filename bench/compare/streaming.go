package main

import (
	"context"
	"time"

	"github.com/sluice-ai/sluice/internal/bench"
)

// streamSim is the streaming scenario's model server: a fixed prefill and
// token pace, a batch large enough that requests never queue, and no batch
// penalty, so every difference between targets is the proxy's.
var streamSim = simFlags{
	TTFT: 20 * time.Millisecond, PrefillPerToken: 50 * time.Microsecond, ITL: 5 * time.Millisecond,
	MaxRunning: 256, BatchPenalty: 0, Slowdown: 1,
}

// streamPromptTokens is the prompt length of streamed requests.
const streamPromptTokens = 64

// streamingResult is the streaming scenario: SSE streams from one simulated
// model server, direct and through each proxy.
type streamingResult struct {
	Sim   simFlags        `json:"sim"`
	Rows  []*streamingRow `json:"rows"`
	Error string          `json:"error,omitempty"`
}

// streamingRow is one target. Percentiles are the best of the rounds (see
// bestOf); added values are against the direct row's.
type streamingRow struct {
	Target string `json:"target"`
	Error  string `json:"error,omitempty"`

	Rounds []streamRound `json:"rounds"`
	TTFT   dist          `json:"ttft"`
	ITL    dist          `json:"itl"`
	E2E    dist          `json:"latency"`
	Failed int64         `json:"failed"`

	AddedTTFTP50 float64 `json:"added_ttft_p50_ms"`
	AddedTTFTP99 float64 `json:"added_ttft_p99_ms"`
	AddedITLP50  float64 `json:"added_itl_p50_ms"`
	AddedITLP99  float64 `json:"added_itl_p99_ms"`

	url string
}

type streamRound struct {
	TTFT dist `json:"ttft"`
	ITL  dist `json:"itl"`
	E2E  dist `json:"latency"`
}

// streaming measures time to first token and inter-token latency of
// streamed completions, directly and through each proxy.
func (s *suite) streaming(ctx context.Context) *streamingResult {
	res := &streamingResult{Sim: streamSim}
	sim, err := s.startSim(ctx, "stream", streamSim)
	if err != nil {
		res.Error = s.scenarioFailed(ctx, "streaming", err)
		return res
	}
	defer sim.stop(s)

	res.Rows = append(res.Rows, &streamingRow{Target: "direct", url: sim.URL})
	for _, p := range s.enabledProxies() {
		row := &streamingRow{Target: p.Name}
		res.Rows = append(res.Rows, row)
		in, err := s.startProxy(ctx, p, p.Default, []string{sim.host()}, "warn")
		if err != nil {
			row.Error = s.scenarioFailed(ctx, "streaming", err)
			continue
		}
		defer in.stop(s)
		row.url = in.URL
	}

	o := s.opts
	for round := range o.rounds {
		for _, row := range rotate(res.Rows, round) {
			if row.url == "" || ctx.Err() != nil {
				continue
			}
			s.logf("streaming: round %d/%d %.0f req/s × %d tokens %v -> %s", round+1, o.rounds, o.streamRate, o.streamTokens, o.streamDuration, row.Target)
			r, err := bench.Run(ctx, bench.Config{
				URL:          row.url,
				Model:        "sim-llm",
				Rate:         o.streamRate,
				Duration:     o.streamDuration,
				Warmup:       o.warmup,
				Timeout:      30 * time.Second,
				Stream:       true,
				PromptTokens: streamPromptTokens,
				MaxTokens:    o.streamTokens,
				Seed:         uint64(round + 1),
			}, nil)
			if err != nil {
				row.Error = s.scenarioFailed(ctx, "streaming "+row.Target, err)
				continue
			}
			row.Rounds = append(row.Rounds, streamRound{TTFT: distOf(r.TTFT), ITL: distOf(r.ITL), E2E: distOf(r.Latency)})
			row.Failed += r.Failed + r.Dropped
		}
	}
	if ctx.Err() != nil {
		res.Error = ctx.Err().Error()
	}
	summarizeStreaming(res.Rows)
	return res
}

func summarizeStreaming(rows []*streamingRow) {
	for _, row := range rows {
		row.TTFT = bestDist(row.Rounds, func(r streamRound) dist { return r.TTFT })
		row.ITL = bestDist(row.Rounds, func(r streamRound) dist { return r.ITL })
		row.E2E = bestDist(row.Rounds, func(r streamRound) dist { return r.E2E })
	}
	if len(rows) == 0 || len(rows[0].Rounds) == 0 {
		return
	}
	direct := rows[0]
	for _, row := range rows {
		if len(row.Rounds) == 0 {
			continue
		}
		row.AddedTTFTP50 = row.TTFT.P50 - direct.TTFT.P50
		row.AddedTTFTP99 = row.TTFT.P99 - direct.TTFT.P99
		row.AddedITLP50 = row.ITL.P50 - direct.ITL.P50
		row.AddedITLP99 = row.ITL.P99 - direct.ITL.P99
	}
}

// bestDist is the percentile-wise best (lowest) of one distribution over
// rounds.
func bestDist[T any](rounds []T, pick func(T) dist) dist {
	var p50, p90, p99, mx []float64
	for _, r := range rounds {
		d := pick(r)
		p50, p90, p99, mx = append(p50, d.P50), append(p90, d.P90), append(p99, d.P99), append(mx, d.Max)
	}
	return dist{P50: bestOf(p50, false), P90: bestOf(p90, false), P99: bestOf(p99, false), Max: bestOf(mx, false)}
}
