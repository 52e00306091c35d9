// Package autoscale decides how many replicas a pool should run and makes it
// so. Scaler is the algorithm: a pure, clock-driven function of demand samples
// (in-flight + waiting requests + pending jobs) in the style of Knative's KPA —
// a stable window for the steady state, a short panic window for bursts, a
// scale-down delay with gradual steps, scale to zero and activation from zero
// — plus an optional seasonal forecast that raises a floor ahead of predictable
// peaks, and an SLO feedback that lowers the target while the observed time
// to first token misses its objective. Demand turns what the gateway knows
// (requests, pending jobs, tokens) and what the replicas report on their
// /metrics (ReplicaScraper) into one number. Controller runs a Scaler for one
// pool every tick and drives an Actuator (local processes, a Kubernetes
// workload, or a command or webhook for any other platform).
//
// docs/autoscaling.md explains why the algorithm is what it is.
package autoscale

import (
	"fmt"
	"math"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// DefaultTick is how often a Controller samples demand and decides.
const DefaultTick = time.Second

// maxScaleDownRate bounds one decision's scale-down: at most halve the
// replicas (Knative's max-scale-down-rate), so a long quiet spell does not
// stop every replica the same second.
const maxScaleDownRate = 2

// scaleDownHysteresis is the headroom a lower count must keep: going down to
// n replicas needs demand at most (1 - 0.1) × target × n, so demand that
// hovers at a boundary between two counts does not flip between them.
// Scale-up has no such band: latency pays for every late replica.
const scaleDownHysteresis = 0.1

// floorSlack keeps a forecast that overshoots a whole number of replicas by
// less than a tenth of target_concurrency from adding a replica: a model's
// residual noise should not pin one more replica all day.
const floorSlack = 0.1

// Sample is what the controller observes each tick.
type Sample struct {
	// Demand is in-flight + waiting requests + pending jobs now. Negative,
	// infinite or NaN counts as 0.
	Demand float64
	// Ready is the replicas taking traffic now.
	Ready int
	// Current is the replica count the actuator is aiming for now (ready or
	// not).
	Current int
	// StartupTime is how long a new replica takes to become ready (0 when
	// not measured yet). The predictive floor looks this far ahead.
	StartupTime time.Duration
	// TTFT is the time to first token observed since the last sample at
	// the SLO's percentile; 0 when nothing was observed. Only the SLO
	// feedback reads it.
	TTFT time.Duration
}

// Decision is one autoscaling decision with the inputs that explain it. It
// is what /api/pools shows and what the controller logs.
type Decision struct {
	// Time is when the decision was made.
	Time time.Time `json:"time"`
	// Desired is the replica count to run, within [min, max].
	Desired int `json:"desired"`
	// Current and Ready are the sample's counts.
	Current int `json:"current"`
	Ready   int `json:"ready"`
	// Demand is the sample's demand; StableDemand and PanicDemand are its
	// averages over the stable and panic windows.
	Demand       float64 `json:"demand"`
	StableDemand float64 `json:"stable_demand"`
	PanicDemand  float64 `json:"panic_demand"`
	// Panic is true while the autoscaler is in panic mode (scale up only).
	Panic bool `json:"panic"`
	// PredictedDemand is the highest forecast demand from now until a new
	// replica would be ready, and PredictedFloor the replicas it needs; both
	// 0 without a forecast (disabled, or less than one season seen).
	PredictedDemand float64 `json:"predicted_demand"`
	PredictedFloor  int     `json:"predicted_floor"`
	// TTFT is the observed time to first token the SLO feedback compared
	// with its objective (0: none observed, or no SLO), and SLOBoost the
	// factor target_concurrency is divided by because of it (1 while the
	// objective is met).
	TTFT     time.Duration `json:"ttft,omitempty"`
	SLOBoost float64       `json:"slo_boost,omitempty"`
	// Rule names the rule that set Desired (one of the Rule constants);
	// Reason says it in words with the numbers behind it.
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

// The rules of Scaler.Decide, as Decision.Rule names them.
const (
	RuleStable     = "stable"     // the stable-window average
	RulePanic      = "panic"      // the panic-window average, scaling up only
	RulePredictive = "predictive" // the seasonal forecast's floor
	RuleActivation = "activation" // demand while at zero replicas
	RuleDelay      = "delay"      // a higher recommendation within scale_down_delay
	RuleStep       = "step"       // scale-down limited to halving
	RuleIdle       = "idle"       // zero was due but scale_to_zero_after has not passed
	RuleZero       = "zero"       // scale to zero
	RuleSLO        = "slo"        // stable or panic, with the target lowered by the SLO feedback
)

// SLO feedback steps: while the objective is missed the boost grows by
// sloStep at most once per panic window (so new replicas get a window to
// show their effect), and it shrinks by the same factor once per
// scale_down_delay while the TTFT is below sloRelax of the objective.
const (
	sloStep  = 1.25
	sloRelax = 0.7
)

// Scaler is the autoscaling algorithm for one pool. It holds no goroutine
// and does no I/O: Decide is called once per tick with the tick's time, so
// tests drive it with a fake clock and recorded traces. Not safe for
// concurrent use.
type Scaler struct {
	cfg  config.Autoscale
	tick time.Duration

	stable, panicW *window
	// recs holds the recommendations of the last scale_down_delay; the
	// highest of them is what may run, so a lower recommendation takes
	// effect only once it has held for the whole delay.
	recs *window

	started  bool
	panicked bool
	panicAt  time.Time // last tick the panic condition held
	panicMax int       // highest count reached in this panic
	busyAt   time.Time // last tick with demand > 0 (or the first tick)

	forecast *Forecast

	boost   float64   // SLO feedback: target_concurrency is divided by it
	boostAt time.Time // last change of boost
}

// NewScaler returns a scaler for cfg, sampled every tick (DefaultTick when
// 0). cfg should be valid (config.Validate); a non-positive target
// concurrency is treated as 1.
func NewScaler(cfg config.Autoscale, tick time.Duration) *Scaler {
	if tick <= 0 {
		tick = DefaultTick
	}
	if !(cfg.TargetConcurrency > 0) {
		cfg.TargetConcurrency = 1
	}
	s := &Scaler{
		cfg:    cfg,
		tick:   tick,
		stable: newWindow(cfg.StableWindow.D(), tick),
		panicW: newWindow(min(cfg.PanicWindow.D(), cfg.StableWindow.D()), tick),
		recs:   newWindow(cfg.ScaleDownDelay.D(), tick),
		boost:  1,
	}
	if cfg.Predictive.Enabled && cfg.Predictive.Season > 0 {
		s.forecast = NewForecast(cfg.Predictive.Season.D(), tick)
	}
	return s
}

// Config is the configuration the scaler runs with.
func (s *Scaler) Config() config.Autoscale { return s.cfg }

// Forecast is the scaler's seasonal model, nil unless predictive scaling is
// enabled.
func (s *Scaler) Forecast() *Forecast { return s.forecast }

// AdoptForecast takes over the model of a scaler being replaced (on a config
// reload) when both forecast the same season, so a reload does not throw
// away days of learning.
func (s *Scaler) AdoptForecast(old *Scaler) {
	if s.forecast != nil && old != nil && old.forecast != nil && old.cfg.Predictive.Season == s.cfg.Predictive.Season && old.tick == s.tick {
		s.forecast = old.forecast
	}
}

// Decide records the sample taken at now and returns the replica count to
// run. The rules, in order:
//
//  1. stable: ceil(stable-window average demand / target_concurrency); to
//     go below the current count, the lower count must carry the demand
//     with 10% to spare (hysteresis);
//  2. panic: when the panic-window average needs at least panic_threshold ×
//     the ready replicas (at least 1), use the panic-window count instead,
//     never below the current count; panic ends after a stable window
//     without the condition;
//  3. predictive floor: the forecast's peak until a new replica could be
//     ready, in replicas;
//  4. activation: at zero replicas, any demand asks for enough replicas for
//     the demand waiting now (at least one), at once;
//  5. scale-down delay: the highest recommendation of the last
//     scale_down_delay wins, so scale-up is immediate and scale-down waits;
//  6. gradual scale-down: one decision at most halves the count;
//  7. scale to zero: with min 0, zero only after scale_to_zero_after without
//     any demand (otherwise one replica stays);
//  8. clamp to [min, max].
func (s *Scaler) Decide(now time.Time, in Sample) Decision {
	demand := in.Demand
	if !(demand > 0) || math.IsInf(demand, 1) { // negative, NaN or infinite
		demand = 0
	}
	d := Decision{Time: now, Current: in.Current, Ready: in.Ready, Demand: demand}
	if !s.started {
		s.started = true
		s.busyAt = now
		// Hold what is running for one delay: a restart of sluice must not
		// read a cold window as "no demand" and stop live replicas.
		s.recs.add(now, float64(in.Current))
	}
	if demand > 0 {
		s.busyAt = now
	}
	s.stable.add(now, demand)
	s.panicW.add(now, demand)
	d.StableDemand, _ = s.stable.avg(now)
	d.PanicDemand, _ = s.panicW.avg(now)
	target := s.cfg.TargetConcurrency
	if s.cfg.SLO.TTFT > 0 {
		s.feedback(now, in.TTFT)
		d.TTFT, d.SLOBoost = in.TTFT, s.boost
		target /= s.boost
	}

	// 1-2: stable or panic.
	want, rule := replicasFor(d.StableDemand/target), RuleStable
	if want < in.Current {
		want = min(in.Current, replicasFor(d.StableDemand/(target*(1-scaleDownHysteresis))))
	}
	if d.PanicDemand/target >= s.cfg.PanicThreshold*float64(max(in.Ready, 1)) {
		s.panicked = true
		s.panicAt = now
	} else if s.panicked && now.Sub(s.panicAt) >= s.cfg.StableWindow.D() {
		s.panicked, s.panicMax = false, 0
	}
	if s.panicked {
		d.Panic = true
		want, rule = max(replicasFor(d.PanicDemand/target), in.Current, s.panicMax), RulePanic
		s.panicMax = want
	}

	if s.boost > 1 && rule == RuleStable && want > replicasFor(d.StableDemand/s.cfg.TargetConcurrency) {
		rule = RuleSLO
	}

	// 3: predictive floor.
	if s.forecast != nil {
		s.forecast.Observe(now, demand)
		if peak, ok := s.forecast.Peak(now, in.StartupTime+s.tick); ok {
			d.PredictedDemand = peak
			d.PredictedFloor = replicasFor(peak/target - floorSlack)
			if d.PredictedFloor > want {
				want, rule = d.PredictedFloor, RulePredictive
			}
		}
	}

	// 4: activation from zero.
	if in.Current == 0 && demand > 0 {
		if a := max(replicasFor(demand/target), 1); a >= want {
			want, rule = a, RuleActivation
		}
	}

	// 5: scale-down delay.
	s.recs.add(now, float64(want))
	if held, ok := s.recs.max(now); ok && int(held) > want {
		want, rule = int(held), RuleDelay
	}

	// 6: gradual scale-down.
	if floor := in.Current / maxScaleDownRate; want < floor {
		want, rule = floor, RuleStep
	}

	// 7: scale to zero.
	idle := now.Sub(s.busyAt)
	if want == 0 && in.Current > 0 {
		if idle < s.cfg.ScaleToZeroAfter.D() {
			want, rule = 1, RuleIdle
		} else {
			rule = RuleZero
		}
	}

	// 8: clamp.
	bound := ""
	switch {
	case want > s.cfg.Max:
		want, bound = s.cfg.Max, fmt.Sprintf("; clamped to max %d", s.cfg.Max)
	case want < s.cfg.Min:
		want, bound = s.cfg.Min, fmt.Sprintf("; raised to min %d", s.cfg.Min)
	}
	d.Desired, d.Rule = want, rule
	d.Reason = s.explain(&d, rule, idle) + bound
	return d
}

// feedback updates the SLO boost from the TTFT observed at now (0: none).
func (s *Scaler) feedback(now time.Time, ttft time.Duration) {
	obj := s.cfg.SLO.TTFT.D()
	maxBoost := max(s.cfg.SLO.MaxBoost, 1)
	switch {
	case ttft > obj:
		if s.boost < maxBoost && now.Sub(s.boostAt) >= s.cfg.PanicWindow.D() {
			s.boost, s.boostAt = min(s.boost*sloStep, maxBoost), now
		}
	case ttft < time.Duration(sloRelax*float64(obj)) || ttft == 0:
		// No observation means no request finished its prefill: nothing
		// is missed, so the boost may relax as when the objective is met.
		if s.boost > 1 && now.Sub(s.boostAt) >= s.cfg.ScaleDownDelay.D() {
			s.boost, s.boostAt = max(s.boost/sloStep, 1), now
		}
	}
}

// explain puts the rule that set d.Desired into words with its inputs.
func (s *Scaler) explain(d *Decision, rule string, idle time.Duration) string {
	target := s.cfg.TargetConcurrency
	switch rule {
	case RulePanic:
		return fmt.Sprintf("panic: %.2f demand over %s needs %.1f replicas with %d ready; scaling up only", d.PanicDemand, s.cfg.PanicWindow.D(), d.PanicDemand/target, d.Ready)
	case RulePredictive:
		return fmt.Sprintf("predictive: forecast peak demand %.2f before a new replica could start needs %d", d.PredictedDemand, d.PredictedFloor)
	case RuleActivation:
		return fmt.Sprintf("activation: %.0f requests waiting with no replica", d.Demand)
	case RuleDelay:
		return fmt.Sprintf("scale-down delayed: %d was recommended within the last %s", d.Desired, s.cfg.ScaleDownDelay.D())
	case RuleStep:
		return fmt.Sprintf("scale-down step: at most halving %d per decision", d.Current)
	case RuleIdle:
		return fmt.Sprintf("idle for %s; scale to zero after %s", idle, s.cfg.ScaleToZeroAfter.D())
	case RuleZero:
		return fmt.Sprintf("scale to zero: no demand for %s", idle)
	case RuleSLO:
		return fmt.Sprintf("slo: time to first token %s against an objective of %s; target lowered to %.2f (÷%.2f) for %.2f average demand", d.TTFT, s.cfg.SLO.TTFT.D(), target/d.SLOBoost, d.SLOBoost, d.StableDemand)
	}
	return fmt.Sprintf("stable: %.2f average demand over %s / target %g", d.StableDemand, s.cfg.StableWindow.D(), target)
}

// replicasFor rounds a fractional replica need up, ignoring float noise just
// above a whole number (4.0000000001 replicas is 4).
func replicasFor(x float64) int {
	switch {
	case !(x > 0):
		return 0
	case x > maxReplicas:
		return maxReplicas
	}
	return int(math.Ceil(x - 1e-9))
}

// maxReplicas bounds replicasFor so a wild forecast or demand cannot
// overflow an int; max in the config clamps far below it.
const maxReplicas = 1 << 30
