package main

import (
	"strings"
	"testing"
)

// The targets are judged from the rows of one run, as ratios.
func TestTargets(t *testing.T) {
	r := &report{Bound: 0.3, Rows: []*row{
		{runSpec: runSpec{Name: "round_robin", Trace: "mooncake"}, TTFTP50MS: 300, TTFTP99MS: 3000, CachedTokenRatio: 0.1},
		{runSpec: runSpec{Name: "p2c_ewma", Trace: "mooncake"}, TTFTP50MS: 280, TTFTP99MS: 2800, CachedTokenRatio: 0.1},
		{runSpec: runSpec{Name: "kv_aware", Trace: "mooncake"}, TTFTP50MS: 90, TTFTP99MS: 1500, CachedTokenRatio: 0.28, HitVsBound: 0.28 / 0.3, MaxMeanLoad: 1.3},
		{runSpec: runSpec{Name: "kv_aware, 3 gateways, shared index", Trace: "mooncake", Gateways: 3, Share: true}, CachedTokenRatio: 0.2},
		{runSpec: runSpec{Name: "control: p2c_ewma", Trace: "azure"}, TTFTP50MS: 100, TTFTP99MS: 1000},
		{runSpec: runSpec{Name: "control: kv_aware", Trace: "azure"}, TTFTP50MS: 104, TTFTP99MS: 990},
	}}
	want := map[string]bool{
		"kv_aware prefix-cache hit ratio ≥ 0.9× the single-replica bound": true,
		"kv_aware max/mean replica load ≤ 1.25":                           false,
		"kv_aware TTFT p50 ≥ 3× better than round_robin":                  true,
		"kv_aware TTFT p99 ≤ 0.5× p2c_ewma's":                             false,
		"3 gateways sharing the index: hit ratio ≥ 0.9× one gateway's":    false,
		"low-reuse control: kv_aware TTFT within ±5% of p2c_ewma":         true,
	}
	got := targets(r)
	if len(got) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(got), len(want), got)
	}
	for _, g := range got {
		if m, ok := want[g.what]; !ok || m != g.met {
			t.Errorf("%s: met %v (%s), want %v", g.what, g.met, g.measured, m)
		}
	}
	md := markdown(r)
	for _, s := range []string{"| kv_aware | 0 / 0 | 0.280 | 0.93 |", "MISSED", "| control: kv_aware |"} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q:\n%s", s, md)
		}
	}
}
