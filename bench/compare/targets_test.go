package main

import (
	"math"
	"strings"
	"testing"
)

func TestEvaluateTargets(t *testing.T) {
	overhead := func(sluiceRPS, nginxRPS, caddyRPS, sluiceP99, haproxyP99 float64) *overheadResult {
		row := func(name string, rps, added float64) *overheadRow {
			return &overheadRow{Target: name, RPS: rps, AddedP99: added, Wrk: []wrkResult{{}}, Latency: []dist{{}}}
		}
		return &overheadResult{Rows: []*overheadRow{
			row("direct", 20000, 0),
			row("sluice", sluiceRPS, sluiceP99),
			row("haproxy", 10000, haproxyP99),
			row("nginx", nginxRPS, 0.1),
			row("caddy", caddyRPS, 0.3),
		}}
	}
	balancing := func(oracle, rr, ewma float64) *balancingResult {
		row := func(proxy, policy string, isOracle bool, p99 float64) *balancingRow {
			return &balancingRow{Proxy: proxy, Policy: policy, Oracle: isOracle, Stream: true, Sent: 100, P99All: jsonFloat(p99)}
		}
		return &balancingResult{Replicas: 6, Slow: 1, SlowSim: simFlags{Slowdown: 8}, Stream: true, Rows: []*balancingRow{
			row("sluice", "round_robin", true, oracle),
			row("sluice", "round_robin", false, rr),
			row("sluice", "p2c_ewma", false, ewma),
		}}
	}
	tests := []struct {
		name string
		rep  *report
		// want holds a substring of each target's verdict, in order.
		want []string
	}{
		{
			name: "all met",
			rep:  &report{Overhead: overhead(9000, 10000, 7500, 0.2, 0.2), Balancing: balancing(300, 2000, 400)},
			want: []string{"met (0.9× ≥ 0.8×)", "met (0.9× ≥ 0.8×)", "met (1.2× ≥ 1×)", "met (0.200 ms ≤ 0.300 ms)", "met (0.200 ms ≤ 0.500 ms)", "met (1.33× ≤ 1.50×)", "met (0.200× ≤ 0.500×)", "not measured", "not measured", "not measured"},
		},
		{
			name: "all missed",
			rep:  &report{Overhead: overhead(6000, 10000, 8000, 0.6, 0.2), Balancing: balancing(300, 600, 600)},
			want: []string{"MISSED by 25% (0.6× < 0.8×)", "MISSED by 25% (0.6× < 0.8×)", "MISSED by 25% (0.75× < 1×)", "MISSED by 100% (0.600 ms > 0.300 ms)", "MISSED by 20% (0.600 ms > 0.500 ms)", "MISSED by 33% (2.00× > 1.50×)", "MISSED by 100% (1.00× > 0.500×)", "not measured", "not measured", "not measured"},
		},
		{
			name: "round robin lost requests, p2c_ewma did not",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, 0.2, 0.2), Balancing: balancing(300, math.Inf(1), 350)},
			want: []string{"met", "met", "met", "met", "met", "met", "met (0.000× ≤ 0.500×)", "not measured", "not measured", "not measured"},
		},
		{
			name: "p2c_ewma lost requests",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, 0.2, 0.2), Balancing: balancing(300, math.Inf(1), math.Inf(1))},
			want: []string{"met", "met", "met", "met", "met", "MISSED: over 1% of requests failed", "missed: both lost", "not measured", "not measured", "not measured"},
		},
		{
			name: "HAProxy's added p99 within noise, sluice's above it",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, 0.05, -0.1), Balancing: balancing(300, 2000, 400)},
			want: []string{"met", "met", "met", "MISSED by 0.050 ms", "met (0.050 ms ≤ 0.500 ms)", "met", "met", "not measured", "not measured", "not measured"},
		},
		{
			name: "both added p99s within noise",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, -0.2, -0.1), Balancing: balancing(300, 2000, 400)},
			want: []string{"met", "met", "met", "inconclusive", "met (-0.200 ms ≤ 0.500 ms)", "met", "met", "not measured", "not measured", "not measured"},
		},
		{
			name: "nothing measured",
			rep:  &report{},
			want: []string{"not measured", "not measured", "not measured", "not measured", "not measured", "not measured", "not measured", "not measured", "not measured", "not measured"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := evaluateTargets(tt.rep)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d targets, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].Verdict, w) {
					t.Errorf("target %q: verdict %q, want it to contain %q", got[i].Goal, got[i].Verdict, w)
				}
				if (got[i].Met == nil) != (strings.HasPrefix(w, "not measured") || strings.HasPrefix(w, "inconclusive")) {
					t.Errorf("target %q: met = %v with verdict %q", got[i].Goal, got[i].Met, got[i].Verdict)
				}
			}
		})
	}
}

func TestFrontierAndMemoryTargets(t *testing.T) {
	frontier := func(sluice, nginx, haproxy float64) *frontierResult {
		row := func(name string, rate float64) *frontierRow {
			return &frontierRow{Target: name, Edges: []frontierEdge{{BoundMS: 1, Rate: rate}, {BoundMS: 5, Rate: 2 * rate}}}
		}
		return &frontierResult{BoundsMS: []float64{1, 5}, Rows: []*frontierRow{
			row("direct", 20000), row("sluice", sluice), row("haproxy", haproxy), row("nginx", nginx),
		}}
	}
	memory := func(sluiceRSS float64) *memoryResult {
		s := func(rss float64) *memorySample { return &memorySample{Wanted: 10, Open: 10, RssPer: rss, PssPer: rss} }
		return &memoryResult{Rows: []*memoryRow{{Target: "sluice", Idle: s(sluiceRSS)}, {Target: "nginx", Idle: s(0.7)}}}
	}
	tests := []struct {
		name string
		rep  *report
		want []string
	}{
		{"met", &report{Frontier: frontier(9000, 10000, 11000), Memory: memory(15)},
			[]string{"met (0.9× ≥ 0.8×)", "met (0.82× ≥ 0.8×)", "met (15.0 KiB ≤ 16.0 KiB)"}},
		{"missed", &report{Frontier: frontier(4000, 10000, 5000), Memory: memory(20.3)},
			[]string{"MISSED by 50% (0.4× < 0.8×)", "met (0.8× ≥ 0.8×)", "MISSED by 27% (20.3 KiB > 16.0 KiB)"}},
		{"others over the bound at the lowest rate", &report{Frontier: frontier(500, 0, 0), Memory: memory(15)},
			[]string{"met: NGINX was over", "met: HAProxy was over", "met"}},
		{"none within the bound", &report{Frontier: frontier(0, 0, 700), Memory: &memoryResult{}},
			[]string{"inconclusive", "MISSED by 100%", "not measured"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := evaluateTargets(tt.rep)
			got = got[len(got)-3:]
			for i, w := range tt.want {
				if !strings.Contains(got[i].Verdict, w) {
					t.Errorf("target %q: verdict %q, want it to contain %q", got[i].Goal, got[i].Verdict, w)
				}
			}
			if !strings.Contains(got[2].Measured, "NGINX 0.7") && tt.rep.Memory.Rows != nil {
				t.Errorf("memory target does not name the others: %q", got[2].Measured)
			}
		})
	}
}
