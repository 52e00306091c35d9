package autoscale

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// epoch is an arbitrary start for simulated time (a Monday, 00:00 UTC).
var epoch = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// trace is demand as a function of time since the simulation started.
type trace func(t time.Duration) float64

func constant(v float64) trace { return func(time.Duration) float64 { return v } }

// step is from before at, to after.
func step(from, to float64, at time.Duration) trace {
	return func(t time.Duration) float64 {
		if t < at {
			return from
		}
		return to
	}
}

// ramp goes linearly from a to b over [start, start+over], flat outside.
func ramp(a, b float64, start, over time.Duration) trace {
	return func(t time.Duration) float64 {
		switch {
		case t <= start:
			return a
		case t >= start+over:
			return b
		}
		return a + (b-a)*float64(t-start)/float64(over)
	}
}

// spike is base with height during [at, at+width).
func spike(base, height float64, at, width time.Duration) trace {
	return func(t time.Duration) float64 {
		if t >= at && t < at+width {
			return height
		}
		return base
	}
}

// noisy multiplies each sample by a uniform factor in [1-frac, 1+frac],
// deterministically.
func noisy(tr trace, frac float64, seed uint64) trace {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(t time.Duration) float64 { return tr(t) * (1 + frac*(2*r.Float64()-1)) }
}

// pulse is on during [at, at+width) and zero elsewhere.
func pulse(level float64, at, width time.Duration) trace {
	return spike(0, level, at, width)
}

// run drives a scaler over tr for d, with one sample per tick and a replica
// model that follows each decision: new replicas become ready startup after
// they are asked for, removed ones go at once (not-yet-ready ones first).
type run struct {
	decisions []Decision
	// readyAt holds one entry per replica the actuator runs.
	readyAt []time.Time
}

func simulate(s *Scaler, tr trace, d, startup time.Duration, initial int) *run {
	r := &run{}
	for range initial {
		r.readyAt = append(r.readyAt, epoch)
	}
	for t := time.Duration(0); t < d; t += s.tick {
		now := epoch.Add(t)
		ready := 0
		for _, at := range r.readyAt {
			if !at.After(now) {
				ready++
			}
		}
		dec := s.Decide(now, Sample{Demand: tr(t), Ready: ready, Current: len(r.readyAt), StartupTime: startup})
		r.decisions = append(r.decisions, dec)
		for len(r.readyAt) < dec.Desired {
			r.readyAt = append(r.readyAt, now.Add(startup))
		}
		if len(r.readyAt) > dec.Desired {
			r.readyAt = r.readyAt[:dec.Desired] // the newest are the least ready
		}
	}
	return r
}

// at returns the decision made at simulated time t.
func (r *run) at(t time.Duration) Decision {
	for _, d := range r.decisions {
		if !d.Time.Before(epoch.Add(t)) {
			return d
		}
	}
	return r.decisions[len(r.decisions)-1]
}

// between returns the decisions made in [from, to).
func (r *run) between(from, to time.Duration) []Decision {
	var out []Decision
	for _, d := range r.decisions {
		if !d.Time.Before(epoch.Add(from)) && d.Time.Before(epoch.Add(to)) {
			out = append(out, d)
		}
	}
	return out
}

// flaps counts scale-downs followed by a scale-up within delay.
func (r *run) flaps(delay time.Duration) int {
	n := 0
	for i, d := range r.decisions {
		if d.Desired >= d.Current {
			continue
		}
		for _, e := range r.decisions[i+1:] {
			if e.Time.Sub(d.Time) > delay {
				break
			}
			if e.Desired > e.Current {
				n++
				break
			}
		}
	}
	return n
}

func maxDesired(ds []Decision) int {
	m := 0
	for _, d := range ds {
		m = max(m, d.Desired)
	}
	return m
}

func testConfig(mod func(*config.Autoscale)) config.Autoscale {
	c := config.DefaultAutoscale()
	c.Max = 20
	if mod != nil {
		mod(&c)
	}
	return c
}

func TestScalerTraces(t *testing.T) {
	const startup = 10 * time.Second
	tests := []struct {
		name    string
		cfg     config.Autoscale
		trace   trace
		dur     time.Duration
		initial int
		check   func(t *testing.T, r *run)
	}{
		{
			name:    "4x step panics within two ticks and reaches the need within the panic window",
			cfg:     testConfig(nil),
			trace:   step(8, 32, 120*time.Second),
			dur:     5 * time.Minute,
			initial: 2,
			check: func(t *testing.T, r *run) {
				before := r.at(119 * time.Second)
				if before.Desired != 2 || before.Panic {
					t.Fatalf("before the step: %+v, want 2 replicas, no panic", before)
				}
				firstTwo := r.between(120*time.Second, 122*time.Second)
				if !firstTwo[len(firstTwo)-1].Panic || maxDesired(firstTwo) <= 2 {
					t.Errorf("two ticks after a 4x step: %+v; want panic and a scale-up", firstTwo)
				}
				if d := r.at(126 * time.Second); d.Desired < 8 {
					t.Errorf("a panic window after the step: desired %d, want 8 (32/4)", d.Desired)
				}
				if got := maxDesired(r.decisions); got != 8 {
					t.Errorf("max desired %d, want 8: panic must not overshoot the demand", got)
				}
				for _, d := range r.between(120*time.Second, 5*time.Minute) {
					if d.Desired < d.Current {
						t.Fatalf("scaled down after a step up: %+v", d)
					}
				}
			},
		},
		{
			name:    "ramp is followed without panic or scale-down",
			cfg:     testConfig(nil),
			trace:   ramp(0, 40, time.Minute, 10*time.Minute),
			dur:     13 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				prev := 0
				for _, d := range r.between(time.Minute, 13*time.Minute) {
					if d.Panic {
						t.Fatalf("panic on a gentle ramp: %+v", d)
					}
					if d.Desired < prev {
						t.Fatalf("scaled down during a ramp up: %+v", d)
					}
					prev = d.Desired
					// The stable window lags the ramp by about half its
					// length; the count may lag as much, not more.
					lagged := ramp(0, 40, time.Minute, 10*time.Minute)(d.Time.Sub(epoch) - 31*time.Second)
					if need := replicasFor(lagged / 4); d.Desired < need {
						t.Fatalf("at %s desired %d, want >= %d", d.Time.Sub(epoch), d.Desired, need)
					}
				}
				if d := r.at(13*time.Minute - time.Second); d.Desired != 10 {
					t.Errorf("after the ramp: desired %d, want 10 (40/4)", d.Desired)
				}
			},
		},
		{
			name:    "spike below the panic threshold is absorbed",
			cfg:     testConfig(nil),
			trace:   spike(3, 12, 2*time.Minute, 3*time.Second),
			dur:     5 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				// The panic window peaks at (3×12 + 3×3)/6 = 7.5, 1.9 replicas
				// against a threshold of 2 × 1 ready; 3 s of 12 lift the
				// 60 s average to 3.45, still one replica's worth: the queue
				// absorbs the spike and nothing scales.
				for _, d := range r.decisions {
					if d.Panic || d.Desired != 1 {
						t.Fatalf("%+v, want 1 replica and no panic", d)
					}
				}
			},
		},
		{
			name: "hysteresis: a count stays until the lower one has 10% to spare",
			cfg:  testConfig(nil),
			trace: func(t time.Duration) float64 {
				switch {
				case t < 2*time.Minute:
					return 4.4 // 2 replicas
				case t < 6*time.Minute:
					return 3.8 // fits 1, but not with 10% to spare: stay at 2
				}
				return 3.4 // fits 1 with room: go to 1
			},
			dur:     9 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				for _, d := range r.between(time.Minute, 6*time.Minute) {
					if d.Desired != 2 {
						t.Fatalf("%+v, want 2 while demand is in the band", d)
					}
				}
				// The stable average reaches 3.6 (0.9 × 4) when half the
				// window holds 3.4, at 6m30s; the delay adds 30 s.
				if d := r.at(6*time.Minute + 55*time.Second); d.Desired != 2 {
					t.Errorf("%+v, want 2 until the delay passed", d)
				}
				if d := r.at(7*time.Minute + 5*time.Second); d.Desired != 1 {
					t.Errorf("%+v, want 1", d)
				}
			},
		},
		{
			name:    "spike above the panic threshold panics, holds, then scales down gradually",
			cfg:     testConfig(nil),
			trace:   spike(3, 40, 2*time.Minute, 3*time.Second),
			dur:     6 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				spikeTicks := r.between(2*time.Minute, 2*time.Minute+3*time.Second)
				if !spikeTicks[len(spikeTicks)-1].Panic {
					t.Fatalf("no panic for a 10x spike: %+v", spikeTicks)
				}
				// The panic window never averages more than 3 s of 40 and 3
				// of 3: 21.5 → 6 replicas.
				if got := maxDesired(r.decisions); got > 6 || got < 2 {
					t.Errorf("max desired %d, want 2..6", got)
				}
				peak := maxDesired(r.decisions)
				// Panic holds the count for a stable window after the
				// condition ends (t ≈ 2m6s at the latest); then the delay.
				for _, d := range r.between(2*time.Minute+3*time.Second, 3*time.Minute+3*time.Second) {
					if d.Desired < peak {
						t.Fatalf("scaled down during panic hold: %+v", d)
					}
				}
				// Then down by at most half per tick to 1.
				for _, d := range r.decisions {
					if d.Desired < d.Current && d.Desired < d.Current/2 {
						t.Fatalf("scale-down by more than half: %+v", d)
					}
				}
				if d := r.at(6*time.Minute - time.Second); d.Desired != 1 || d.Panic {
					t.Errorf("long after the spike: %+v, want 1 and calm", d)
				}
			},
		},
		{
			name:    "±20% noise around a steady load does not flap",
			cfg:     testConfig(nil),
			trace:   noisy(constant(20), 0.2, 1),
			dur:     30 * time.Minute,
			initial: 5,
			check: func(t *testing.T, r *run) {
				if n := r.flaps(30 * time.Second); n != 0 {
					t.Errorf("%d scale-downs were followed by a scale-up within the delay", n)
				}
				changes := 0
				for _, d := range r.between(2*time.Minute, 30*time.Minute) {
					if d.Panic {
						t.Fatalf("panic on noise: %+v", d)
					}
					if d.Desired < 5 || d.Desired > 6 {
						t.Fatalf("desired %d for demand 20±20%% / 4, want 5 or 6: %+v", d.Desired, d)
					}
					if d.Desired != d.Current {
						changes++
					}
				}
				// Each change of count must be rarer than once per delay.
				if limit := int((28 * time.Minute) / (30 * time.Second)); changes > limit/2 {
					t.Errorf("%d count changes in 28 minutes, want at most %d", changes, limit/2)
				}
			},
		},
		{
			name: "idle goes to zero after scale_to_zero_after; the first request activates one at once",
			cfg: testConfig(func(c *config.Autoscale) {
				c.Min = 0
				c.ScaleToZeroAfter = config.Duration(3 * time.Minute)
			}),
			trace: func(t time.Duration) float64 {
				return max(pulse(8, 0, time.Minute)(t), pulse(1, 10*time.Minute, time.Second)(t))
			},
			dur:     12 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				lastDemand := time.Minute - time.Second
				for _, d := range r.between(time.Minute, lastDemand+3*time.Minute) {
					if d.Desired == 0 {
						t.Fatalf("zero %s after the last demand, before scale_to_zero_after: %+v", d.Time.Sub(epoch)-lastDemand, d)
					}
				}
				if d := r.at(lastDemand + 3*time.Minute + 2*time.Second); d.Desired != 0 {
					t.Fatalf("3 min idle: %+v, want 0", d)
				}
				act := r.at(10 * time.Minute)
				if act.Current != 0 || act.Desired != 1 || act.Rule != RuleActivation {
					t.Fatalf("first request at zero: %+v, want activation to 1 in the same tick", act)
				}
			},
		},
		{
			name: "activation sizes for the requests waiting",
			cfg: testConfig(func(c *config.Autoscale) {
				c.Min = 0
			}),
			trace:   step(0, 20, 5*time.Minute),
			dur:     6 * time.Minute,
			initial: 0,
			check: func(t *testing.T, r *run) {
				if d := r.at(5*time.Minute - time.Second); d.Desired != 0 {
					t.Fatalf("before any demand: %+v, want 0", d)
				}
				if d := r.at(5 * time.Minute); d.Desired != 5 {
					t.Fatalf("20 requests waiting at zero: %+v, want 5 replicas at once", d)
				}
			},
		},
		{
			name: "default scale_to_zero_after goes to zero after the stable window and the delay",
			cfg: testConfig(func(c *config.Autoscale) {
				c.Min = 0
			}),
			trace:   pulse(4, 0, 10*time.Second),
			dur:     3 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				// The average stays above zero for a stable window after
				// the last demand; the delay then holds for 30 s more.
				last := 10 * time.Second
				if d := r.at(last + 60*time.Second + 25*time.Second); d.Desired != 1 {
					t.Errorf("before stable window + delay: %+v, want 1", d)
				}
				if d := r.at(last + 60*time.Second + 32*time.Second); d.Desired != 0 {
					t.Errorf("after stable window + delay: %+v, want 0", d)
				}
			},
		},
		{
			name:    "clamped to max under overload",
			cfg:     testConfig(func(c *config.Autoscale) { c.Max = 4 }),
			trace:   step(4, 400, 30*time.Second),
			dur:     2 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				if got := maxDesired(r.decisions); got != 4 {
					t.Errorf("max desired %d, want max 4", got)
				}
				if d := r.at(time.Minute); !strings.Contains(d.Reason, "clamped to max 4") {
					t.Errorf("reason %q does not mention the clamp", d.Reason)
				}
			},
		},
		{
			name:    "min holds with no demand",
			cfg:     testConfig(func(c *config.Autoscale) { c.Min = 3 }),
			trace:   constant(0),
			dur:     5 * time.Minute,
			initial: 1,
			check: func(t *testing.T, r *run) {
				for _, d := range r.decisions {
					if d.Desired != 3 {
						t.Fatalf("%+v, want min 3", d)
					}
				}
			},
		},
		{
			name:    "a restart of sluice does not drop running replicas before the delay",
			cfg:     testConfig(nil),
			trace:   constant(0),
			dur:     time.Minute,
			initial: 6,
			check: func(t *testing.T, r *run) {
				if d := r.at(25 * time.Second); d.Desired != 6 {
					t.Errorf("within the delay of start: %+v, want the 6 running", d)
				}
				if d := r.at(59 * time.Second); d.Desired != 1 {
					t.Errorf("after the delay: %+v, want min 1", d)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewScaler(tt.cfg, time.Second)
			r := simulate(s, tt.trace, tt.dur, startup, tt.initial)
			tt.check(t, r)
			for _, d := range r.decisions {
				if d.Desired < tt.cfg.Min || d.Desired > tt.cfg.Max {
					t.Fatalf("desired %d outside [%d, %d]", d.Desired, tt.cfg.Min, tt.cfg.Max)
				}
				if d.Reason == "" {
					t.Fatalf("decision without a reason: %+v", d)
				}
			}
		})
	}
}

// daily is a weekday-like load: 4 at night, a step to 32 at 09:00, back at
// 17:00, with ±10% noise.
func daily(seed uint64) trace {
	base := func(t time.Duration) float64 {
		h := (t % (24 * time.Hour))
		if h >= 9*time.Hour && h < 17*time.Hour {
			return 32
		}
		return 4
	}
	return noisy(base, 0.1, seed)
}

func TestScalerPredictiveFloorLeadsTheDailyPeak(t *testing.T) {
	const (
		startup = 3 * time.Minute
		tick    = 5 * time.Second
		days    = 4
	)
	cfg := testConfig(func(c *config.Autoscale) {
		c.Predictive = config.Predictive{Enabled: true, Season: config.Duration(24 * time.Hour)}
	})
	s := NewScaler(cfg, tick)
	r := simulate(s, daily(7), days*24*time.Hour, startup, 1)

	peak := 9 * time.Hour
	for day := range days {
		at := time.Duration(day) * 24 * time.Hour
		lead := r.at(at + peak - startup)
		early := r.at(at + peak - startup - 10*time.Minute)
		if day == 0 {
			if lead.PredictedFloor != 0 {
				t.Errorf("day 1 forecast before a season was seen: %+v", lead)
			}
			continue
		}
		// The floor must stand at the peak's need (32/4 = 8) one start time
		// before the peak, so replicas are ready when it comes ...
		if lead.PredictedFloor < 8 || lead.Desired < 8 {
			t.Errorf("day %d, start time before the peak: floor %d desired %d, want >= 8 (%s)", day+1, lead.PredictedFloor, lead.Desired, lead.Reason)
		}
		// ... and not hours ahead of it.
		if early.PredictedFloor > 2 {
			t.Errorf("day %d, 10 min earlier: floor %d, want the night's 1-2", day+1, early.PredictedFloor)
		}
		// The reactive part alone would still run the night's count then.
		if need := replicasFor(lead.StableDemand / 4); need > 2 {
			t.Errorf("day %d: the trace already peaked before 09:00 (stable need %d)", day+1, need)
		}
	}
}

func TestScalerPredictiveDisabledHasNoFloor(t *testing.T) {
	s := NewScaler(testConfig(nil), 5*time.Second)
	r := simulate(s, daily(7), 2*24*time.Hour, 3*time.Minute, 1)
	if d := r.at(24*time.Hour + 9*time.Hour - 3*time.Minute); d.PredictedFloor != 0 || d.Desired > 2 {
		t.Errorf("without predictive: %+v, want no floor and the night's count", d)
	}
}

func TestScalerIgnoresBadDemand(t *testing.T) {
	s := NewScaler(testConfig(nil), time.Second)
	for i, v := range []float64{math.NaN(), -5, math.Inf(-1), math.Inf(1)} {
		d := s.Decide(epoch.Add(time.Duration(i)*time.Second), Sample{Demand: v, Ready: 1, Current: 1})
		if d.Demand != 0 || d.Desired != 1 {
			t.Errorf("demand %v: %+v, want it counted as 0", v, d)
		}
	}
}

func TestAdoptForecast(t *testing.T) {
	cfg := testConfig(func(c *config.Autoscale) {
		c.Predictive = config.Predictive{Enabled: true, Season: config.Duration(time.Hour)}
	})
	old := NewScaler(cfg, time.Second)
	for i := range 3601 { // the last slot is folded when the next begins
		old.Decide(epoch.Add(time.Duration(i)*time.Second), Sample{Demand: 8, Current: 2, Ready: 2})
	}
	if !old.Forecast().Ready() {
		t.Fatal("one season seen, forecast not ready")
	}
	cfg.Max = 10
	next := NewScaler(cfg, time.Second)
	next.AdoptForecast(old)
	if !next.Forecast().Ready() {
		t.Error("a reload that keeps the season lost the forecast")
	}
	cfg.Predictive.Season = config.Duration(2 * time.Hour)
	other := NewScaler(cfg, time.Second)
	other.AdoptForecast(old)
	if other.Forecast().Ready() {
		t.Error("a new season adopted the old season's model")
	}
}

func BenchmarkDecide(b *testing.B) {
	cfg := testConfig(func(c *config.Autoscale) {
		c.Predictive = config.Predictive{Enabled: true, Season: config.Duration(24 * time.Hour)}
	})
	s := NewScaler(cfg, time.Second)
	tr := noisy(constant(20), 0.2, 1)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Decide(epoch.Add(time.Duration(i)*time.Second), Sample{Demand: tr(0), Ready: 5, Current: 5, StartupTime: time.Minute})
		i++
	}
}
