package main

import (
	"fmt"
	"math"
	"strings"
)

// targetCheck is one of the goals sluice is measured against, with what
// this run found.
type targetCheck struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	// Met is nil when the run could not measure the target.
	Met     *bool  `json:"met"`
	Verdict string `json:"verdict"`
}

// evaluateTargets checks the goals the suite exists to report on:
//
//   - sluice throughput ≥ 0.8× NGINX's and HAProxy's, and ≥ Caddy's;
//   - sluice's added p99 ≤ 1.5× HAProxy's, and ≤ 0.5 ms;
//   - with slow replicas, sluice p2c_ewma's p99 ≤ 1.5× the oracle's and
//     ≤ 0.5× sluice round robin's;
//   - sluice's frontier within +1 ms of p99 ≥ 0.8× NGINX's and HAProxy's;
//   - sluice's memory per idle keep-alive connection ≤ 16 KiB RSS.
func evaluateTargets(rep *report) []targetCheck {
	var out []targetCheck
	oh := rep.Overhead
	sl := oh.row("sluice")
	for _, t := range []struct {
		other string
		goal  float64
	}{{"nginx", 0.8}, {"haproxy", 0.8}, {"caddy", 1.0}} {
		goal := fmt.Sprintf("sluice throughput ≥ %s× %s", trimFloat(t.goal, 2), proxyTitle(t.other))
		o := oh.row(t.other)
		if !sl.measured() || !o.measured() {
			out = append(out, notMeasured(goal, "sluice or "+t.other+" throughput"))
			continue
		}
		ratio := sl.RPS / o.RPS
		out = append(out, atLeast(goal, ratio, t.goal,
			fmt.Sprintf("%.0f vs %.0f req/s = %.2f×", sl.RPS, o.RPS, ratio), "×"))
	}

	goal := "sluice added p99 ≤ 1.5× HAProxy's"
	if h := oh.row("haproxy"); !sl.measured() || !h.measured() {
		out = append(out, notMeasured(goal, "sluice or haproxy latency"))
	} else {
		measured := fmt.Sprintf("p99 %+.3f ms vs HAProxy %+.3f ms (p50 %+.3f vs %+.3f ms)", sl.AddedP99, h.AddedP99, sl.AddedP50, h.AddedP50)
		if h.AddedP99 > 0 {
			out = append(out, atMost(goal, sl.AddedP99, 1.5*h.AddedP99, measured, " ms"))
		} else {
			out = append(out, addedWithinNoise(goal, measured, sl.AddedP99))
		}
	}

	goal = "sluice added p99 ≤ 0.5 ms"
	if !sl.measured() {
		out = append(out, notMeasured(goal, "sluice latency"))
	} else {
		out = append(out, atMost(goal, sl.AddedP99, 0.5,
			fmt.Sprintf("%+.3f ms at %g req/s (p50 %+.3f ms)", sl.AddedP99, rep.Settings.LatencyRate, sl.AddedP50), " ms"))
	}

	bal := rep.Balancing
	var ewma, oracle, rr *balancingRow
	if bal != nil {
		ewma, oracle, rr = bal.row("sluice", "p2c_ewma", bal.Stream), bal.row("oracle", "", bal.Stream), bal.row("sluice", "round_robin", bal.Stream)
	}
	slowDesc := "slow replicas"
	if bal != nil {
		slowDesc = fmt.Sprintf("%d of %d replicas %g× slow", bal.Slow, bal.Replicas, bal.SlowSim.Slowdown)
	}
	goal = "p2c_ewma p99 ≤ 1.5× oracle's (" + slowDesc + ")"
	if !balanced(ewma) || !balanced(oracle) {
		out = append(out, notMeasured(goal, "sluice p2c_ewma or the oracle"))
	} else {
		e, o := float64(ewma.P99All), float64(oracle.P99All)
		out = append(out, atMost(goal, e/o, 1.5,
			fmt.Sprintf("%s vs %s = %s", fmtMS(e), fmtMS(o), fmtRatio(e/o)), "×"))
	}
	goal = "p2c_ewma p99 ≤ 0.5× round_robin's (" + slowDesc + ")"
	if !balanced(ewma) || !balanced(rr) {
		out = append(out, notMeasured(goal, "sluice p2c_ewma or round_robin"))
	} else {
		e, r := float64(ewma.P99All), float64(rr.P99All)
		var ratio float64
		switch {
		case math.IsInf(r, 1) && math.IsInf(e, 1):
			ratio = math.NaN()
		case math.IsInf(r, 1):
			ratio = 0
		default:
			ratio = e / r
		}
		measured := fmt.Sprintf("%s vs %s = %s", fmtMS(e), fmtMS(r), fmtRatio(ratio))
		if math.IsNaN(ratio) {
			f := false
			out = append(out, targetCheck{Goal: goal, Measured: measured, Met: &f,
				Verdict: "missed: both lost more than 1% of requests"})
		} else {
			out = append(out, atMost(goal, ratio, 0.5, measured, "×"))
		}
	}
	out = append(out, frontierTargets(rep.Frontier)...)
	out = append(out, memoryTarget(rep.Memory))
	return out
}

// frontierTargets checks sluice's frontier within the tightest bound
// against NGINX's and HAProxy's: the throughput goal, measured open loop
// at a latency budget instead of closed loop.
func frontierTargets(f *frontierResult) []targetCheck {
	bound := frontierBounds[0]
	if f != nil && len(f.BoundsMS) > 0 {
		bound = f.BoundsMS[0]
	}
	var out []targetCheck
	sl := f.row("sluice").edge(bound)
	for _, other := range []string{"nginx", "haproxy"} {
		goal := fmt.Sprintf("sluice frontier at +%g ms p99 ≥ 0.8× %s's", bound, proxyTitle(other))
		o := f.row(other).edge(bound)
		if sl == nil || o == nil {
			out = append(out, notMeasured(goal, "the frontier of sluice or "+other))
			continue
		}
		measured := fmt.Sprintf("%.0f vs %.0f req/s", sl.Rate, o.Rate)
		if o.Rate == 0 {
			t := targetCheck{Goal: goal, Measured: measured,
				Verdict: fmt.Sprintf("inconclusive: %s was over the bound already at the lowest rate", proxyTitle(other))}
			if sl.Rate > 0 {
				met := true
				t.Met, t.Verdict = &met, "met: "+proxyTitle(other)+" was over the bound already at the lowest rate, sluice was not"
			}
			out = append(out, t)
			continue
		}
		ratio := sl.Rate / o.Rate
		out = append(out, atLeast(goal, ratio, 0.8, fmt.Sprintf("%s = %.2f×", measured, ratio), "×"))
	}
	return out
}

// memoryTarget checks sluice's memory per idle keep-alive connection.
func memoryTarget(m *memoryResult) targetCheck {
	const goal = "sluice idle keep-alive connection ≤ 16 KiB RSS"
	var sl *memorySample
	var others []string
	if m != nil {
		for _, row := range m.Rows {
			switch {
			case row.Target == "sluice":
				sl = row.Idle
			case row.Idle.measured():
				others = append(others, fmt.Sprintf("%s %.1f", proxyTitle(row.Target), row.Idle.RssPer))
			}
		}
	}
	if !sl.measured() {
		return notMeasured(goal, "sluice's memory")
	}
	measured := fmt.Sprintf("%.1f KiB RSS (Pss %.1f) per connection, %d open", sl.RssPer, sl.PssPer, sl.Open)
	if len(others) > 0 {
		measured += "; " + strings.Join(others, ", ")
	}
	return atMost(goal, sl.RssPer, 16, measured, " KiB")
}

// addedWithinNoise judges the added-p99 target when HAProxy's p99 was not
// above the direct baseline's: the run's noise is then larger than what
// HAProxy adds, and there is no limit to compare with. sluice misses only
// if its own p99 rose above the baseline's.
func addedWithinNoise(goal, measured string, sluice float64) targetCheck {
	if sluice > 0 {
		f := false
		return targetCheck{Goal: goal, Measured: measured, Met: &f,
			Verdict: fmt.Sprintf("MISSED by %.3f ms: HAProxy's p99 was not above the direct baseline's, sluice's was", sluice)}
	}
	return targetCheck{Goal: goal, Measured: measured,
		Verdict: "inconclusive: neither p99 rose above the direct baseline's, whose round-to-round noise is larger than what either proxy adds"}
}

func balanced(r *balancingRow) bool { return r != nil && r.Error == "" && r.Sent > 0 }

func notMeasured(goal, what string) targetCheck {
	return targetCheck{Goal: goal, Measured: "-", Verdict: "not measured: no result for " + what}
}

// atLeast checks v ≥ goal; a miss is reported as the fraction of the goal
// it fell short by.
func atLeast(goal string, v, want float64, measured, unit string) targetCheck {
	met := v >= want
	t := targetCheck{Goal: goal, Measured: measured, Met: &met}
	if met {
		t.Verdict = fmt.Sprintf("met (%s%s ≥ %s%s)", trimFloat(v, 2), unit, trimFloat(want, 2), unit)
	} else {
		t.Verdict = fmt.Sprintf("MISSED by %.0f%% (%s%s < %s%s)", 100*(want-v)/want, trimFloat(v, 2), unit, trimFloat(want, 2), unit)
	}
	return t
}

// atMost checks v ≤ limit; a miss is reported as how far above the limit
// v is, relative to it (or in the value's unit when the limit is 0).
func atMost(goal string, v, limit float64, measured, unit string) targetCheck {
	met := v <= limit
	t := targetCheck{Goal: goal, Measured: measured, Met: &met}
	switch {
	case met:
		t.Verdict = fmt.Sprintf("met (%s%s ≤ %s%s)", fmtNum(v), unit, fmtNum(limit), unit)
	case math.IsInf(v, 1):
		t.Verdict = fmt.Sprintf("MISSED: over 1%% of requests failed (limit %s%s)", fmtNum(limit), unit)
	case limit <= 0:
		t.Verdict = fmt.Sprintf("MISSED by %s%s (%s%s > %s%s)", fmtNum(v-limit), unit, fmtNum(v), unit, fmtNum(limit), unit)
	default:
		t.Verdict = fmt.Sprintf("MISSED by %.0f%% (%s%s > %s%s)", 100*(v-limit)/limit, fmtNum(v), unit, fmtNum(limit), unit)
	}
	return t
}

// trimFloat prints v with at most prec decimals and no trailing zeros.
func trimFloat(v float64, prec int) string {
	s := fmt.Sprintf("%.*f", prec, v)
	if prec > 0 {
		for s[len(s)-1] == '0' {
			s = s[:len(s)-1]
		}
		if s[len(s)-1] == '.' {
			s = s[:len(s)-1]
		}
	}
	return s
}

// fmtNum prints a value with precision fitting its size.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsInf(v, 0):
		return "∞"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// fmtMS prints milliseconds, or "> timeout" for an infinite p99.
func fmtMS(v float64) string {
	if math.IsInf(v, 1) {
		return "∞ (>1% failed)"
	}
	return fmtNum(v) + " ms"
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmtNum(v) + "×"
}

func proxyTitle(name string) string {
	switch name {
	case "nginx":
		return "NGINX"
	case "haproxy":
		return "HAProxy"
	case "caddy":
		return "Caddy"
	}
	return name
}
