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
			row("haproxy", 15000, haproxyP99),
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
			want: []string{"met (0.9× ≥ 0.8×)", "met (1.2× ≥ 1×)", "met (0.200 ms ≤ 0.300 ms)", "met (1.33× ≤ 1.50×)", "met (0.200× ≤ 0.500×)"},
		},
		{
			name: "all missed",
			rep:  &report{Overhead: overhead(6000, 10000, 8000, 0.6, 0.2), Balancing: balancing(300, 600, 600)},
			want: []string{"MISSED by 25% (0.6× < 0.8×)", "MISSED by 25% (0.75× < 1×)", "MISSED by 100% (0.600 ms > 0.300 ms)", "MISSED by 33% (2.00× > 1.50×)", "MISSED by 100% (1.00× > 0.500×)"},
		},
		{
			name: "round robin lost requests, p2c_ewma did not",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, 0.2, 0.2), Balancing: balancing(300, math.Inf(1), 350)},
			want: []string{"met", "met", "met", "met", "met (0.000× ≤ 0.500×)"},
		},
		{
			name: "p2c_ewma lost requests",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, 0.2, 0.2), Balancing: balancing(300, math.Inf(1), math.Inf(1))},
			want: []string{"met", "met", "met", "MISSED: over 1% of requests failed", "missed: both lost"},
		},
		{
			name: "HAProxy's added p99 within noise, sluice's above it",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, 0.05, -0.1), Balancing: balancing(300, 2000, 400)},
			want: []string{"met", "met", "MISSED by 0.050 ms", "met", "met"},
		},
		{
			name: "both added p99s within noise",
			rep:  &report{Overhead: overhead(9000, 10000, 8000, -0.2, -0.1), Balancing: balancing(300, 2000, 400)},
			want: []string{"met", "met", "inconclusive", "met", "met"},
		},
		{
			name: "nothing measured",
			rep:  &report{},
			want: []string{"not measured", "not measured", "not measured", "not measured", "not measured"},
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
