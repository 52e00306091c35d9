package autoscale

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-ai/sluice/internal/config"
)

// TestSLOFeedback: a demand (7) the target (4) says 2 replicas carry, but whose
// TTFT misses the objective, gets more replicas one step per panic window
// up to max_boost; once TTFT is well inside the objective the boost
// relaxes one step per scale_down_delay.
func TestSLOFeedback(t *testing.T) {
	cfg := config.DefaultAutoscale()
	cfg.SLO = config.SLO{TTFT: config.Duration(time.Second), Percentile: 0.9, MaxBoost: 2}
	s := NewScaler(cfg, time.Second)
	now := epoch
	current := 2
	step := func(ttft time.Duration) Decision {
		d := s.Decide(now, Sample{Demand: 7, Ready: current, Current: current, TTFT: ttft})
		current = d.Desired
		now = now.Add(time.Second)
		return d
	}
	for range 60 {
		if d := step(300 * time.Millisecond); d.Desired != 2 || d.SLOBoost != 1 {
			t.Fatalf("objective met: %+v, want 2 replicas, no boost", d)
		}
	}
	var d Decision
	var boosts []float64
	for range 60 {
		d = step(3 * time.Second)
		if len(boosts) == 0 || boosts[len(boosts)-1] != d.SLOBoost {
			boosts = append(boosts, d.SLOBoost)
		}
	}
	// 1 → 1.25 → 1.5625 → 1.953 → 2 (capped), a step per 6s panic window.
	if fmt.Sprint(boosts) != "[1.25 1.5625 1.953125 2]" {
		t.Errorf("boost steps %v", boosts)
	}
	if d.Desired != 4 || d.Rule != RuleSLO || !strings.Contains(d.Reason, "objective of 1s") {
		t.Errorf("objective missed for a minute: %+v, want 4 replicas by rule slo", d)
	}
	// Met again: the boost steps down once per 30s delay; replicas follow
	// after the scale-down delay.
	for range 200 {
		d = step(200 * time.Millisecond)
	}
	if d.SLOBoost != 1 || d.Desired != 2 {
		t.Errorf("objective met for 200s: %+v, want the boost gone and 2 replicas", d)
	}
}

func TestParseHistory(t *testing.T) {
	in := "time,demand\n# a comment\n\n1700000060,4\n2023-11-14T22:13:20Z, 2.5\n1700000000.5,1\n"
	pts, err := ParseHistory(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	// 1700000000 is 2023-11-14T22:13:20Z: the points come back in time order.
	want := []HistoryPoint{
		{time.Unix(1700000000, 0).UTC(), 2.5},
		{time.Unix(1700000000, 5e8).UTC(), 1},
		{time.Unix(1700000060, 0).UTC(), 4},
	}
	if len(pts) != len(want) {
		t.Fatalf("parsed %+v", pts)
	}
	for i := range want {
		if !pts[i].Time.Equal(want[i].Time) || pts[i].Demand != want[i].Demand {
			t.Errorf("point %d = %+v, want %+v", i, pts[i], want[i])
		}
	}
	for _, bad := range []string{"1700000000\n", "1700000000,-1\n", "1,2\nx,3\n", "1,2\n3,four\n", "1e300,1\n", "1,NaN\n"} {
		if _, err := ParseHistory(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseHistory(%q) succeeded", bad)
		}
	}
}

func FuzzParseHistory(f *testing.F) {
	f.Add("time,demand\n1700000000,3\n")
	f.Add("2023-11-14T22:13:20Z,1e3\n# x\n")
	f.Fuzz(func(t *testing.T, s string) {
		pts, err := ParseHistory(strings.NewReader(s))
		if err != nil {
			return
		}
		for i, p := range pts {
			if p.Demand < 0 || p.Demand != p.Demand {
				t.Fatalf("point %d demand %v", i, p.Demand)
			}
			if i > 0 && p.Time.Before(pts[i-1].Time) {
				t.Fatalf("points out of order at %d", i)
			}
		}
	})
}

// TestHistoryTrainsForecast: a controller whose predictive.history holds
// two days of a business-hours step forecasts the 09:00 peak on its first
// tick, exports it on sluice_autoscaler_forecast_replicas and scales for it
// before any live demand came.
func TestHistoryTrainsForecast(t *testing.T) {
	var b strings.Builder
	b.WriteString("time,demand\n")
	for m := range 2 * 24 * 60 {
		at := epoch.Add(time.Duration(m) * time.Minute)
		y := 4.0
		if h := at.Hour(); h >= 9 && h < 17 {
			y = 32
		}
		fmt.Fprintf(&b, "%d,%g\n", at.Unix(), y)
	}
	path := filepath.Join(t.TempDir(), "demand.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultAutoscale()
	cfg.Max = 16
	cfg.Predictive = config.Predictive{Enabled: true, Season: config.Duration(24 * time.Hour), History: path}
	// Day three, 08:58: two minutes before the peak, a start time of 5m.
	clk := clockwork.NewFakeClockAt(epoch.Add(48*time.Hour + 8*time.Hour + 58*time.Minute))
	act := &fakeActuator{n: 1}
	reg := prometheus.NewRegistry()
	c, err := NewController("chat", cfg, act, ControllerOptions{
		Inputs:      func() Inputs { return Inputs{Active: 4} },
		Ready:       act.Desired,
		StartupTime: func() time.Duration { return 5 * time.Minute },
		Clock:       clk,
		Logger:      slog.New(slog.DiscardHandler),
		Metrics:     NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Step(t.Context())
	if d.PredictedFloor != 8 || d.Desired != 8 || d.Rule != RulePredictive {
		t.Errorf("first decision %+v, want the forecast's 8 replicas", d)
	}
	if got := testutil.ToFloat64(c.gauges.forecast); got != 8 {
		t.Errorf("sluice_autoscaler_forecast_replicas = %v, want 8", got)
	}

	// A history that cannot be read leaves the forecast to live demand.
	cfg.Predictive.History = filepath.Join(t.TempDir(), "missing.csv")
	c2, err := NewController("chat", cfg, &fakeActuator{n: 1}, ControllerOptions{Demand: func() float64 { return 4 }, Ready: func() int { return 1 }, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if d := c2.Step(t.Context()); d.PredictedFloor != 0 {
		t.Errorf("without history: %+v, want no forecast yet", d)
	}
}
