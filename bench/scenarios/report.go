package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/hostinfo"
)

// schemaVersion names the layout of scenarios.json.
const schemaVersion = "sluice.bench-scenarios/v1"

// report is everything one run measured: scenarios.json.
type report struct {
	Schema    string           `json:"schema"`
	Date      time.Time        `json:"date"`
	Command   string           `json:"command"`
	Quick     bool             `json:"quick"`
	Seed      uint64           `json:"seed"`
	Commit    string           `json:"commit"`
	Version   string           `json:"version"`
	Machine   hostinfo.Machine `json:"machine"`
	LoadStart [3]float64       `json:"load_avg_start"`
	LoadEnd   [3]float64       `json:"load_avg_end"`
	ElapsedS  float64          `json:"elapsed_s"`
	SimFlags  []string         `json:"sim_flags"`

	Overload   *overloadResult   `json:"overload,omitempty"`
	Kill       *killResult       `json:"kill,omitempty"`
	Priorities *priorityResult   `json:"priorities,omitempty"`
	Autoscale  *autoscaleResult  `json:"autoscale,omitempty"`
	Trace      *traceResult      `json:"trace,omitempty"`
	Errors     map[string]string `json:"errors,omitempty"`
}

func readReport(dir string) (*report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "scenarios.json"))
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	if r.Schema != schemaVersion {
		return nil, fmt.Errorf("read results: schema %q, want %q", r.Schema, schemaVersion)
	}
	return &r, nil
}

// writeReport writes scenarios.json, the charts and scenarios.md into dir.
func writeReport(r *report, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	_, traceFailed := r.Errors["trace"]
	if r.Trace != nil || traceFailed {
		if err := writeTraceReport(r, dir); err != nil {
			return err
		}
	}
	if r.Overload == nil && r.Kill == nil && r.Priorities == nil && r.Autoscale == nil && len(r.Errors) == btoi(traceFailed) {
		return nil // only the trace ran: scenarios.md keeps its results
	}
	sr := *r
	sr.Trace = nil
	r = &sr
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scenarios.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	charts, err := drawCharts(r, dir)
	if err != nil {
		return err
	}
	var md bytes.Buffer
	writeMarkdown(&md, r, charts)
	if err := os.WriteFile(filepath.Join(dir, "scenarios.md"), md.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// check is one target of a scenario and whether the run met it.
type check struct {
	target, measured string
	met              bool
}

func writeChecks(w *bytes.Buffer, checks []check) {
	w.WriteString("| target | measured | |\n|---|---|---|\n")
	for _, c := range checks {
		mark := "met"
		if !c.met {
			mark = "**missed**"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", c.target, c.measured, mark)
	}
	w.WriteString("\n")
}

func writeMarkdown(w *bytes.Buffer, r *report, charts map[string]string) {
	fmt.Fprintf(w, "# Resilience and autoscaling scenarios\n\n")
	fmt.Fprintf(w, "Measured %s by `%s`", r.Date.Format("2006-01-02 15:04 UTC"), r.Command)
	fmt.Fprintf(w, " at commit `%s` (%s), in %.0f s.", r.Commit, r.Version, r.ElapsedS)
	if r.Quick {
		w.WriteString(" **A -quick smoke run: durations are too short for the numbers to mean much.**")
	}
	m := r.Machine
	fmt.Fprintf(w, "\n\nMachine: %d CPUs (%s), %.0f GB memory, %s, kernel %s, %s. ", m.CPUs, m.CPUModel, m.MemoryGB, m.OS, m.Kernel, m.Go)
	fmt.Fprintf(w, "Load average (1/5/15 min) %.2f/%.2f/%.2f at the start, %.2f/%.2f/%.2f at the end. ",
		r.LoadStart[0], r.LoadStart[1], r.LoadStart[2], r.LoadEnd[0], r.LoadEnd[1], r.LoadEnd[2])
	w.WriteString("The machine is shared, so every scenario measures its own baseline in the same run and reports ratios against it.\n\n")
	fmt.Fprintf(w, "Every replica is `sluice sim %s` (a batch of 4; about 100 ms for a request alone). ", strings.Join(r.SimFlags, " "))
	w.WriteString("Every request is a non-streamed chat completion (unless marked streamed) with a distinct 64-word prompt and `max_tokens: 16`, ")
	w.WriteString("sent open loop with Poisson arrivals by the suite's own driver; latency counts from the intended send time, so it includes any delay in sending. ")
	w.WriteString("Closed-loop baselines use `internal/bench`. Reproduce with `make bench-scenarios` (or `go run ./bench/scenarios`; `-quick` for a smoke run, `-render DIR` to redraw this page from `DIR/scenarios.json`).\n\n")

	for _, name := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(w, "> **Scenario %s failed:** %s\n\n", name, oneLine(r.Errors[name]))
	}
	if r.Overload != nil {
		writeOverload(w, r.Overload, charts)
	}
	if r.Kill != nil {
		writeKill(w, r.Kill, charts)
	}
	if r.Priorities != nil {
		writePriorities(w, r.Priorities, charts)
	}
	if r.Autoscale != nil {
		writeAutoscale(w, r.Autoscale, charts)
	}
	w.WriteString(`## Notes

- Everything runs on the one machine: the sims, the gateway and the load generator share its CPUs, and other work may share them too (see the load averages above). The sims' latencies are timers, so they hold under contention; the gateway's and the client's do not, which shows as noise in the tails.
- These scenarios measure how sluice behaves under faults and load (what it admits, refuses, retries and scales), not its raw speed: for overhead and throughput against other proxies, see [README.md](README.md) in this directory.
- The autoscaling trace is compressed in time: bursts of 15 s and 7 s against a replica start of 2 s stand in for bursts of minutes against a model load of tens of seconds. What matters is the ratio, and a step burst is the hardest case for any reactive autoscaler.
- The autoscaler's numbers vary more from run to run than the fixed pools': they depend on how many replicas it happens to hold when a burst arrives (a cluster of Poisson arrivals at the base rate can make it add replicas early).
- A target marked **missed** above is reported as measured; nothing is re-run until it passes.
`)
}

func writeOverload(w *bytes.Buffer, o *overloadResult, charts map[string]string) {
	a, n := &o.Admission, &o.NoAdmission
	w.WriteString("## 1. Overload: 3× capacity against max_concurrency and a bounded queue\n\n")
	fmt.Fprintf(w, "%d sims behind one pool with `max_concurrency: %d` per backend and `queue: {size: %d, timeout: %s}`. ",
		o.Sims, o.MaxConcurrency, o.QueueSize, time.Duration(o.QueueTimeoutMs*float64(time.Millisecond)))
	fmt.Fprintf(w, "Baseline, a closed loop of exactly %d clients (the pool's slots) through sluice: **%.1f req/s** (the capacity), latency p50 %s, p99 %s. ",
		o.Sims*o.MaxConcurrency, o.Capacity, fmtMs(o.Baseline.P50), fmtMs(o.Baseline.P99))
	fmt.Fprintf(w, "Then %.1f× that, **%.1f req/s**, open loop for %.0f s; goodput counts completions from %.0f s to the end of the load. ",
		o.OfferedFactor, o.Offered, o.DurationS, o.GoodputFromS)
	fmt.Fprintf(w, "For contrast, the same load through a gateway with no cap and no queue (`max_concurrency: 0`, `queue: {size: 0}`), whose clients give up after %s.\n\n",
		time.Duration(n.ClientTimeoutMs*float64(time.Millisecond)))

	w.WriteString("| | with admission control | without |\n|---|---|---|\n")
	row := func(label, x, y string) { fmt.Fprintf(w, "| %s | %s | %s |\n", label, x, y) }
	row("sent / succeeded", fmt.Sprintf("%d / %d", a.Sent, a.OK), fmt.Sprintf("%d / %d", n.Sent, n.OK))
	row("goodput (× capacity)", fmt.Sprintf("%.1f req/s (**%s**)", a.Goodput, fmtX(a.GoodputRatio)), fmt.Sprintf("%.1f req/s (%s)", n.Goodput, fmtX(n.GoodputRatio)))
	row("succeeded: p50 (× baseline)", fmtMs(a.Admitted.P50)+" ("+fmtX(a.P50Ratio)+")", fmtMs(n.Admitted.P50)+" ("+fmtX(n.P50Ratio)+")")
	row("succeeded: p99 (× baseline)", fmtMs(a.Admitted.P99)+" ("+fmtX(a.P99Ratio)+")", fmtMs(n.Admitted.P99)+" ("+fmtX(n.P99Ratio)+")")
	row("succeeded: max", fmtMs(a.Admitted.Max), fmtMs(n.Admitted.Max))
	row("refused with 503 (share of sent)", fmt.Sprintf("%d (%s)", sum(a.Refused), fmtPct(a.RefusedShare)), fmt.Sprintf("%d (%s)", sum(n.Refused), fmtPct(n.RefusedShare)))
	for _, code := range []string{"queue_full", "queue_timeout"} {
		d := a.RefusalLatency[code]
		dn := n.RefusalLatency[code]
		row(fmt.Sprintf("503 `%s`: count, p50 / p99 latency", code), fmtRefusal(a.Refused[code], d), fmtRefusal(n.Refused[code], dn))
	}
	row("503 without Retry-After", fmt.Sprint(a.RetryAfterMissing), fmt.Sprint(n.RetryAfterMissing))
	row("other failures", fmtCounts(a.Failed), fmtCounts(n.Failed))
	row("max queue depth in /api/pools", fmt.Sprintf("%d (size %d)", a.MaxQueueDepth, o.QueueSize), fmt.Sprintf("%d (no queue)", n.MaxQueueDepth))
	row("max requests inside the gateway", fmt.Sprint(a.MaxInFlight), fmt.Sprint(n.MaxInFlight))
	row("gateway RSS before / peak / after", fmtRSS(a), fmtRSS(n))
	w.WriteString("\n")

	// A request admitted into a full queue waits for queue.size
	// completions, queue.size / capacity on average; queue.timeout is the
	// hard bound.
	expectedWait := time.Duration(float64(o.QueueSize) / o.Capacity * float64(time.Second))
	hardBound := o.Baseline.Max + time.Duration(o.QueueTimeoutMs*float64(time.Millisecond))
	refusedFast := a.RefusalLatency["queue_full"].P99
	checks := []check{
		{"goodput ≥ 0.95 × capacity", fmtX(a.GoodputRatio), float64(a.GoodputRatio) >= 0.95},
		{"every admitted request succeeds", fmt.Sprintf("%d failures other than 503", sum(a.Failed)), sum(a.Failed) == 0},
		{fmt.Sprintf("admitted latency bounded by the queue: max ≤ baseline max + queue.timeout = %s", fmtMs(hardBound)), fmtMs(a.Admitted.Max), a.Admitted.Max <= hardBound},
		{"refusals are 503 with Retry-After", fmt.Sprintf("%d without", a.RetryAfterMissing), a.RetryAfterMissing == 0},
		{"a full queue refuses at once (p99 of `queue_full` < 50 ms)", fmtMs(refusedFast), a.Refused["queue_full"] == 0 || refusedFast < 50*time.Millisecond},
		{fmt.Sprintf("queue depth ≤ %d", o.QueueSize), fmt.Sprint(a.MaxQueueDepth), a.MaxQueueDepth <= o.QueueSize},
		{"gateway memory bounded (peak RSS < 1.5 × before)", fmt.Sprintf("%.2f×", float64(a.RSSPeakKiB)/float64(max(a.RSSBeforeKiB, 1))), float64(a.RSSPeakKiB) < 1.5*float64(a.RSSBeforeKiB)},
	}
	writeChecks(w, checks)
	fmt.Fprintf(w, "**What this shows:** at %.1f× capacity, admission control kept goodput at %s of the pool's capacity and the admitted requests' p99 at %s of the baseline — ",
		o.OfferedFactor, fmtX(a.GoodputRatio), fmtX(a.P99Ratio))
	fmt.Fprintf(w, "the baseline plus the wait behind a full queue, queue.size / capacity = %s on average — ", fmtMs(expectedWait))
	fmt.Fprintf(w, "and turned the excess (%s of requests) into 503s that arrived in %s (p99). ", fmtPct(a.RefusedShare), fmtMs(refusedFast))
	fmt.Fprintf(w, "Without it, every request got in: up to %d sat inside the gateway and the sims' own queues, the median success took %s (%s the baseline) and %s requests were abandoned by their clients. ",
		n.MaxInFlight, fmtMs(n.Admitted.P50), fmtX(n.P50Ratio), fmtCount(n.Failed["timeout"]))
	if float64(n.GoodputRatio) < float64(a.GoodputRatio)-0.05 {
		fmt.Fprintf(w, "Goodput fell too, to %s: with every request let in, the oldest reach the front of the sims' queues about when their clients give up, so capacity goes to answers nobody reads. ", fmtX(n.GoodputRatio))
	}
	w.WriteString("Refusing early is what keeps the answers that are given fast.\n\n")
	if f := charts["overload"]; f != "" {
		fmt.Fprintf(w, "![requests inside the gateway during the overload](%s)\n\n", f)
	}
}

func writeKill(w *bytes.Buffer, k *killResult, charts map[string]string) {
	w.WriteString("## 2. A replica killed under load\n\n")
	fmt.Fprintf(w, "%d sims behind one pool (`max_concurrency: 4`, a queue, health checks every 500 ms, default retries). ", k.Sims)
	fmt.Fprintf(w, "Baseline, a closed loop of 16 clients: %.1f req/s. Load: %.0f%% of that, **%.1f req/s**, open loop for %.0f s, every other request streamed; ",
		k.Capacity, k.LoadFactor*100, k.Rate, k.DurationS)
	fmt.Fprintf(w, "`kill -9` of %s at %.1f s.\n\n", k.Killed, k.KillAtS)
	w.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(w, "| sent / succeeded | %d / %d |\n", k.Sent, k.OK)
	fmt.Fprintf(w, "| failures allowed by the design (streamed, after bytes from the killed replica) | %d |\n", k.Expected)
	fmt.Fprintf(w, "| any other failure | **%d** |\n", k.Unexpected)
	for _, key := range slices.Sorted(maps.Keys(k.Failures)) {
		fmt.Fprintf(w, "| &nbsp;&nbsp;%s | %d |\n", key, k.Failures[key])
	}
	fmt.Fprintf(w, "| latency before the kill: p50 / p99 | %s / %s |\n", fmtMs(k.Before.P50), fmtMs(k.Before.P99))
	fmt.Fprintf(w, "| latency in the 2 s after: p50 / p99 | %s / %s |\n", fmtMs(k.JustAfter.P50), fmtMs(k.JustAfter.P99))
	fmt.Fprintf(w, "| latency after the kill: p50 / p99 (p99 × before) | %s / %s (%s) |\n", fmtMs(k.After.P50), fmtMs(k.After.P99), fmtX(k.P99Ratio))
	fmt.Fprintf(w, "| successes from the killed replica after the kill | %d |\n", k.ServedAfter)
	fmt.Fprintf(w, "| upstream attempts retried (`sluice_retries_total`) | %.0f |\n", k.Retries)
	fmt.Fprintf(w, "| killed replica's state in /api/pools at the end | %s |\n\n", k.KilledState)
	writeChecks(w, []check{
		{"only streams that had sent bytes fail", fmt.Sprintf("%d other failures", k.Unexpected), k.Unexpected == 0},
		{"the dead replica leaves the pool", k.KilledState, k.KilledState != "" && k.KilledState != "healthy"},
	})
	failed := k.Expected + k.Unexpected
	fmt.Fprintf(w, "**What this shows:** of %d requests, %d failed", k.Sent, failed)
	each := "each"
	if failed == 1 {
		each = "and it was"
	}
	switch {
	case failed == 0:
		w.WriteString(". ")
	case k.Unexpected == 0 && k.Failures["streamed, error_event, after bytes, from the killed replica"] == failed:
		fmt.Fprintf(w, ", %s a stream already under way on the killed replica, ended by an explicit error event rather than a silent cut. ", each)
	case k.Unexpected == 0:
		fmt.Fprintf(w, ", %s a stream already under way on the killed replica (see the table for how it ended). ", each)
	default:
		fmt.Fprintf(w, "; %d of them were not streams already under way (see the table). ", k.Unexpected)
	}
	fmt.Fprintf(w, "The gateway retried %.0f upstream attempts during the run (`sluice_retries_total`): requests that had sent nothing to the client yet went to another replica. ", k.Retries)
	fmt.Fprintf(w, "The three survivors carried the load at %s the p99 of before.\n\n", fmtX(k.P99Ratio))
	if f := charts["kill"]; f != "" {
		fmt.Fprintf(w, "![p99 latency per second around the kill](%s)\n\n", f)
	}
}

func writePriorities(w *bytes.Buffer, p *priorityResult, charts map[string]string) {
	w.WriteString("## 3. Priorities under saturation\n\n")
	fmt.Fprintf(w, "One sim behind `max_concurrency: %d` and `queue: {size: %d, timeout: %s}`. Baseline, a closed loop of %d: %.1f req/s, p50 %s. ",
		p.MaxConcurrency, p.QueueSize, time.Duration(p.QueueTimeoutMs*float64(time.Millisecond)), p.MaxConcurrency, p.Capacity, fmtMs(p.Baseline.P50))
	fmt.Fprintf(w, "Load: %.1f× that, **%.1f req/s**, for %.0f s, a third each `X-Sluice-Priority: high`, `normal` and `low`, interleaved. Deepest queue: %d. ",
		p.Factor, p.Offered, p.DurationS, p.MaxQueueDepth)
	w.WriteString("Wait is latency minus the baseline median (the service time).\n\n")
	w.WriteString("| priority | sent | completed | p50 | p99 | max | wait p50 | wait p99 | p50 × high | p99 × high |\n|---|---|---|---|---|---|---|---|---|---|\n")
	var high, low *priorityClass
	for i := range p.Classes {
		c := &p.Classes[i]
		switch c.Priority {
		case "high":
			high = c
		case "low":
			low = c
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %.0f ms | %.0f ms | %s | %s |\n", c.Priority, c.Sent, fmtPct(c.Completed),
			fmtMs(c.Latency.P50), fmtMs(c.Latency.P99), fmtMs(c.Latency.Max), float64(c.WaitP50), float64(c.WaitP99), fmtX(c.P50VsHigh), fmtX(c.P99VsHigh))
	}
	w.WriteString("\n")
	if high != nil && low != nil {
		writeChecks(w, []check{
			{"high waits less than low (p50)", fmt.Sprintf("%s vs %s", fmtMs(high.Latency.P50), fmtMs(low.Latency.P50)), high.Latency.P50 < low.Latency.P50},
			{"high waits less than low (p99)", fmt.Sprintf("%s vs %s", fmtMs(high.Latency.P99), fmtMs(low.Latency.P99)), high.Latency.P99 < low.Latency.P99},
			{"low is not starved (completes)", fmtPct(low.Completed), float64(low.Completed) > 0.99},
		})
		fmt.Fprintf(w, "**What this shows:** with the replica saturated, high-priority requests waited a median %.0f ms against low's %.0f ms (low's p50 is %s high's), ",
			float64(high.WaitP50), float64(low.WaitP50), fmtX(low.P50VsHigh))
		fmt.Fprintf(w, "and %s of low-priority requests still completed: the queue serves classes by weight (8:4:1), not strictly, so low keeps moving.\n\n", fmtPct(low.Completed))
	}
	if f := charts["priorities"]; f != "" {
		fmt.Fprintf(w, "![median latency per second by priority](%s)\n\n", f)
	}
}

func writeAutoscale(w *bytes.Buffer, a *autoscaleResult, charts map[string]string) {
	w.WriteString("## 4. Autoscaler against fixed pools on a bursty trace\n\n")
	fmt.Fprintf(w, "Process pools of sims run by sluice (`process:` with `sluice sim ... --startup-delay %s`, so a new replica takes %s to come up), `max_concurrency: 4`, a queue. ",
		time.Duration(a.StartupDelayMs*float64(time.Millisecond)), time.Duration(a.StartupDelayMs*float64(time.Millisecond)))
	fmt.Fprintf(w, "Baselines through a one-replica pool: one request at a time, p50 %s, so the latency objective (SLO) is %.0f× that, **%.0f ms**; a closed loop of 4: %.1f req/s per replica. ",
		fmtMs(a.Unloaded.P50), a.SLOFactor, a.SLOMs, a.ReplicaCapacity)
	var shape []string
	for _, ph := range a.Phases {
		shape = append(shape, fmt.Sprintf("%.0f s at %.0f", ph.Duration.Seconds(), ph.Rate))
	}
	fmt.Fprintf(w, "The trace (req/s): %s — base %.1f, peak %.1f, mean %.1f req/s. ", strings.Join(shape, ", "), a.BaseRate, a.PeakRate, a.MeanRate)
	fmt.Fprintf(w, "Fixed pools are sized for %.0f%% of a replica's capacity: %d replicas for the peak, %d for the mean. The autoscaler: `autoscale: %s`. ",
		a.Utilization*100, a.PeakReplicas, a.MeanReplicas, a.Autoscale)
	w.WriteString("Replica-seconds integrate the ready replicas in /api/pools, sampled every 250 ms over the trace; \"alive\" also counts replicas starting or draining. The same arrivals (same seed) are replayed against each pool.\n\n")
	w.WriteString("| pool | replicas | within SLO | in bursts | outside bursts |")
	var looser []float64
	if len(a.Configs) > 0 {
		for _, l := range a.Configs[0].Looser {
			looser = append(looser, l.Factor)
			fmt.Fprintf(w, " within %.0f× (%.0f ms) |", l.Factor, l.SLOMs)
		}
	}
	w.WriteString(" p50 | p99 | failures |\n|---|---|---|---|---|" + strings.Repeat("---|", len(looser)) + "---|---|---|\n")
	for _, c := range a.Configs {
		fmt.Fprintf(w, "| %s | %s | **%s** | %s | %s |", c.Name, c.Replicas, fmtPct(c.SLOAttainment), fmtPct(c.BurstAttainment), fmtPct(c.BaseAttainment))
		for _, l := range c.Looser {
			fmt.Fprintf(w, " %s |", fmtPct(l.Attainment))
		}
		fmt.Fprintf(w, " %s | %s | %s |\n", fmtMs(c.Latency.P50), fmtMs(c.Latency.P99), fmtCounts(c.Failed))
	}
	w.WriteString("\n")
	w.WriteString("| pool | replica-seconds | alive | × peak pool | most ready |")
	nb := 0
	if len(a.Configs) > 0 {
		nb = len(a.Configs[0].Bursts)
		for i, b := range a.Configs[0].Bursts {
			fmt.Fprintf(w, " burst %d (%.0f s at %.0f s): replicas / p99 ready after |", i+1, b.DurationS, b.StartS)
		}
	}
	w.WriteString("\n|---|---|---|---|---|" + strings.Repeat("---|", nb) + "\n")
	for _, c := range a.Configs {
		fmt.Fprintf(w, "| %s | %.0f | %.0f | **%s** | %d |", c.Name, c.ReplicaSeconds, c.AliveReplicaSeconds, fmtX(c.VsPeak), c.MaxReady)
		for _, b := range c.Bursts {
			fmt.Fprintf(w, " %s / %s |", fmtSecs(b.ReplicasS), fmtSecs(b.LatencyS))
		}
		w.WriteString("\n")
	}
	w.WriteString("\n\"Replicas ready after\" is when the pool first had the replicas the burst needs at ")
	fmt.Fprintf(w, "%.0f%% of their capacity (%d); \"p99 ready after\" is when the p99 latency of each second's requests came under the SLO for the rest of the burst (\"never\": the burst ended first).\n\n", a.Utilization*100, a.PeakReplicas)
	if len(a.Configs) == 3 {
		as, pk, mn := &a.Configs[0], &a.Configs[1], &a.Configs[2]
		writeChecks(w, []check{
			{"autoscale within 5 points of the peak pool's SLO attainment", fmt.Sprintf("%s vs %s", fmtPct(as.SLOAttainment), fmtPct(pk.SLOAttainment)), float64(as.SLOAttainment) >= float64(pk.SLOAttainment)-0.05},
			{"autoscale uses far fewer replica-seconds than the peak pool (≤ 0.75×)", fmtX(as.VsPeak), float64(as.VsPeak) <= 0.75},
			{"the mean pool misses the SLO in bursts", fmt.Sprintf("%s in bursts", fmtPct(mn.BurstAttainment)), float64(mn.BurstAttainment) < float64(pk.BurstAttainment)},
		})
		fmt.Fprintf(w, "**What this shows:** the autoscaler met the objective for %s of requests, the pool sized for the peak for %s and the one sized for the mean for %s, ",
			fmtPct(as.SLOAttainment), fmtPct(pk.SLOAttainment), fmtPct(mn.SLOAttainment))
		fmt.Fprintf(w, "at %s and %s of the peak pool's replica-seconds. ", fmtX(as.VsPeak), fmtX(mn.VsPeak))
		fmt.Fprintf(w, "Outside the bursts the autoscaler met it for %s of requests (peak pool %s); within them for %s (peak pool %s, mean pool %s). ",
			fmtPct(as.BaseAttainment), fmtPct(pk.BaseAttainment), fmtPct(as.BurstAttainment), fmtPct(pk.BurstAttainment), fmtPct(mn.BurstAttainment))
		var lags []string
		for i, b := range as.Bursts {
			p99 := fmt.Sprintf("p99 back under the SLO after %s", fmtSecs(b.LatencyS))
			if math.IsNaN(float64(b.LatencyS)) {
				p99 = "p99 not back under the SLO before the burst ended"
			}
			lags = append(lags, fmt.Sprintf("burst %d of %.0f s: the replicas it needs after %s, %s", i+1, b.DurationS, fmtSecs(b.ReplicasS), p99))
		}
		if len(lags) > 0 {
			fmt.Fprintf(w, "A reactive autoscaler pays at the start of each step: it sees the burst within a decision tick or two, a new replica takes %s to start, and the requests that queued meanwhile must drain (%s); where it stood when a burst arrived matters as much, since replicas left from an earlier rise shorten the wait. ",
				time.Duration(a.StartupDelayMs*float64(time.Millisecond)), strings.Join(lags, "; "))
		}
		if len(as.Looser) > 0 {
			l := as.Looser[len(as.Looser)-1]
			fmt.Fprintf(w, "Against a looser objective of %.0f× the unloaded latency it reached %s.", l.Factor, fmtPct(l.Attainment))
		}
		w.WriteString("\n\n")
	}
	if f := charts["autoscale_replicas"]; f != "" {
		fmt.Fprintf(w, "![ready replicas over the trace](%s)\n\n", f)
	}
	if f := charts["autoscale_latency"]; f != "" {
		fmt.Fprintf(w, "![p99 latency over the trace](%s)\n\n", f)
	}
}

func fmtMs(d time.Duration) string {
	v := ms(d)
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func fmtX(n num) string {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", float64(n))
}

func fmtPct(n num) string {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n))
}

// fmtSecs writes a duration in seconds; NaN is "never".
func fmtSecs(n num) string {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return "never"
	}
	return fmt.Sprintf("%.1f s", float64(n))
}

func fmtRefusal(n int, d dist) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%d, %s / %s", n, fmtMs(d.P50), fmtMs(d.P99))
}

func fmtRSS(m *overloadMode) string {
	mb := func(kib int64) string { return fmt.Sprintf("%.0f", float64(kib)/1024) }
	return fmt.Sprintf("%s / %s / %s MiB", mb(m.RSSBeforeKiB), mb(m.RSSPeakKiB), mb(m.RSSAfterKiB))
}

func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func fmtCount(n int) string {
	if n == 0 {
		return "no"
	}
	return fmt.Sprint(n)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
