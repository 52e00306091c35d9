package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/hostinfo"
)

// TestReportRendersAndReadsBack writes a report of every scenario, reads
// its JSON back and renders it again: the page and the charts come out the
// same both ways, and the page says when a target was missed.
func TestReportRendersAndReadsBack(t *testing.T) {
	pts := []point{{0.5, 120}, {1.5, 130}, {2.5, math.Inf(1)}}
	samples := []sample{{At: 0, InFlight: 3, Ready: 1}, {At: time.Second, InFlight: 24, QueueDepth: 16, Ready: 2}}
	r := &report{
		Schema: schemaVersion, Date: time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC), Command: "go run ./bench/scenarios",
		Machine: hostinfo.Machine{CPUs: 2}, SimFlags: simFlags,
		Overload: &overloadResult{
			Sims: 2, MaxConcurrency: 4, QueueSize: 16, QueueTimeoutMs: 2000, Capacity: 60, OfferedFactor: 3, Offered: 180, DurationS: 20,
			Baseline:    dist{Count: 10, P50: 120 * time.Millisecond, P99: 140 * time.Millisecond},
			Admission:   overloadMode{Goodput: 55, GoodputRatio: 0.92, Refused: map[string]int{"queue_full": 100}, RefusalLatency: map[string]dist{"queue_full": {Count: 100, P99: time.Millisecond}}, Failed: map[string]int{}, Samples: samples, RSSBeforeKiB: 20000, RSSPeakKiB: 21000},
			NoAdmission: overloadMode{Refused: map[string]int{}, RefusalLatency: map[string]dist{}, Failed: map[string]int{"timeout": 5}, Samples: samples},
		},
		Kill: &killResult{Sims: 4, Killed: "kill-sim2", KillAtS: 5, Failures: map[string]int{"streamed, error_event, after bytes, from the killed replica": 2}, Expected: 2, Timeline: pts[:2], FailuresAt: []float64{5.1}, KilledState: "unhealthy"},
		Priorities: &priorityResult{Classes: []priorityClass{
			{Priority: "high", Completed: 1, Latency: dist{P50: 150 * time.Millisecond}, Timeline: pts[:2]},
			{Priority: "normal", Completed: 1, Timeline: pts[:2]},
			{Priority: "low", Completed: 1, Latency: dist{P50: 900 * time.Millisecond}, Timeline: pts[:2]},
		}},
		Autoscale: &autoscaleResult{
			Phases: burstyTrace(20, 0.1), BaseRate: 20, Utilization: 0.75, ReplicaCapacity: 30, SLOMs: 200,
			Configs: []autoscaleRun{
				{Name: "autoscale", SLOAttainment: 0.97, VsPeak: 0.6, Timeline: pts, Samples: samples},
				{Name: "fixed-peak", SLOAttainment: 0.99, VsPeak: 1, Timeline: pts, Samples: samples},
				{Name: "fixed-mean", SLOAttainment: 0.7, BurstAttainment: 0.4, VsPeak: 0.5, Timeline: pts, Samples: samples},
			},
		},
		Errors: map[string]string{},
	}
	dir := t.TempDir()
	if err := writeReport(r, dir); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(filepath.Join(dir, "scenarios.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(first)
	for _, want := range []string{
		"## 1. Overload", "## 2. A replica killed", "## 3. Priorities", "## 4. Autoscaler",
		"| goodput ≥ 0.95 × capacity | 0.92× | **missed** |",
		"scenarios_overload.png", "scenarios_kill.png", "scenarios_priorities.png",
		"scenarios_autoscale_replicas.png", "scenarios_autoscale_latency.png",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("scenarios.md lacks %q", want)
		}
	}
	back, err := readReport(dir)
	if err != nil {
		t.Fatal(err)
	}
	again := t.TempDir()
	if err := writeReport(back, again); err != nil {
		t.Fatal(err)
	}
	second, err := os.ReadFile(filepath.Join(again, "scenarios.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(second) != md {
		t.Errorf("re-rendered page differs:\n%s\n----\n%s", md, second)
	}
}
