package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// writeTraceReport writes trace.json, the trace charts and trace.md into
// dir: the trace scenario's page, apart from scenarios.md so that running
// one does not replace the other's results.
func writeTraceReport(r *report, dir string) error {
	tr := *r
	tr.Overload, tr.Kill, tr.Priorities, tr.Autoscale = nil, nil, nil, nil
	b, err := json.MarshalIndent(&tr, "", "  ")
	if err != nil {
		return fmt.Errorf("encode trace results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "trace.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write trace results: %w", err)
	}
	charts, err := drawTraceCharts(r.Trace, dir)
	if err != nil {
		return err
	}
	var md bytes.Buffer
	writeTraceMarkdown(&md, r, charts)
	if err := os.WriteFile(filepath.Join(dir, "trace.md"), md.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write trace results: %w", err)
	}
	return nil
}

// readTraceReport reads what writeTraceReport wrote.
func readTraceReport(dir string) (*report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "trace.json"))
	if err != nil {
		return nil, fmt.Errorf("read trace results: %w", err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read trace results: %w", err)
	}
	if r.Trace == nil {
		return nil, fmt.Errorf("read trace results: %s has no trace", dir)
	}
	return &r, nil
}

func drawTraceCharts(t *traceResult, dir string) (map[string]string, error) {
	files := map[string]string{}
	var auto *traceRun
	for i := range t.Configs {
		if t.Configs[i].Name == "autoscale" {
			auto = &t.Configs[i]
		}
	}
	if auto == nil {
		return files, nil
	}
	gauge := func(samples []sample, v func(sample) float64) []point {
		out := make([]point, 0, len(samples))
		for _, s := range samples {
			out = append(out, point{s.At.Seconds(), v(s)})
		}
		return out
	}
	offered := make([]point, len(t.Offered))
	for i, p := range t.Offered {
		offered[i] = point{p.T, p.V / traceTarget}
	}
	c := &lineChart{
		Title: "Azure LLM trace (conversation), 30× faster: replicas over time",
		X:     "seconds", Y: "replicas",
		XMax: t.DurationS,
		Series: []lineSeries{
			{Name: "offered load ÷ 3 (replicas at the fixed pools' load)", Points: offered, Gray: true},
			{Name: "autoscaler: demand (in flight + queued) ÷ 3", Points: gauge(auto.Samples, func(s sample) float64 { return float64(s.InFlight+int64(s.QueueDepth)) / traceTarget }), Step: true},
			{Name: "autoscaler: desired", Points: gauge(auto.Samples, func(s sample) float64 { return float64(s.Desired) }), Step: true},
			{Name: "autoscaler: ready", Points: gauge(auto.Samples, func(s sample) float64 { return float64(s.Ready) }), Step: true},
		},
		Rules: []rule{{At: float64(t.PeakReplicas), Label: "fixed for the peak"}, {At: float64(t.MeanReplicas), Label: "fixed for the mean"}},
	}
	if err := c.save(filepath.Join(dir, "trace_replicas.png")); err != nil {
		return nil, err
	}
	files["replicas"] = "trace_replicas.png"

	var series []lineSeries
	total := time.Duration(t.DurationS * float64(time.Second))
	for _, run := range t.Configs {
		series = append(series, lineSeries{Name: run.Name, Points: ttftP99(run, 2*time.Second, total)})
	}
	c2 := &lineChart{
		Title: "p99 time to first token per 2 s of the trace",
		X:     "seconds", Y: "ms (log)", LogY: true, XMax: t.DurationS, Top: 60000,
		Series: series,
		Rules:  []rule{{At: t.TTFTSLOMs, Label: "TTFT objective"}},
	}
	if err := c2.save(filepath.Join(dir, "trace_ttft.png")); err != nil {
		return nil, err
	}
	files["ttft"] = "trace_ttft.png"
	return files, nil
}

// ttftP99 is the p99 TTFT of run's requests per width of send time; a
// failed request counts as infinite. The records are not kept in the
// results, so this reads the per-request TTFTs kept for charts.
func ttftP99(run traceRun, width, total time.Duration) []point {
	n := int((total + width - 1) / width)
	buckets := make([][]time.Duration, n)
	for _, r := range run.TTFTs {
		b := int(time.Duration(r.AtMs) * time.Millisecond / width)
		if b < 0 || b >= n {
			continue
		}
		d := time.Duration(r.TTFTMs * float64(time.Millisecond))
		if r.TTFTMs < 0 {
			d = 1<<63 - 1
		}
		buckets[b] = append(buckets[b], d)
	}
	var out []point
	for i, b := range buckets {
		if len(b) == 0 {
			continue
		}
		slices.Sort(b)
		v := quantile(b, 0.99)
		at := (time.Duration(i)*width + width/2).Seconds()
		if v == 1<<63-1 {
			out = append(out, point{at, 60000})
			continue
		}
		out = append(out, point{at, ms(v)})
	}
	return out
}

func writeTraceMarkdown(w *bytes.Buffer, r *report, charts map[string]string) {
	t := r.Trace
	fmt.Fprintf(w, "# Autoscaling on a production LLM trace\n\n")
	fmt.Fprintf(w, "Measured %s by `%s` at commit `%s` (%s), in %.0f s.", r.Date.Format("2006-01-02 15:04 UTC"), r.Command, r.Commit, r.Version, r.ElapsedS)
	if r.Quick {
		w.WriteString(" **A -quick smoke run (the first fifth of the trace): the numbers mean little.**")
	}
	m := r.Machine
	fmt.Fprintf(w, "\n\nMachine: %d CPUs (%s), %.0f GB memory, %s, kernel %s, %s. Load average (1/5/15 min) %.2f/%.2f/%.2f at the start, %.2f/%.2f/%.2f at the end; the machine is shared.\n\n",
		m.CPUs, m.CPUModel, m.MemoryGB, m.OS, m.Kernel, m.Go, r.LoadStart[0], r.LoadStart[1], r.LoadStart[2], r.LoadEnd[0], r.LoadEnd[1], r.LoadEnd[2])
	if msg, ok := r.Errors["trace"]; ok {
		fmt.Fprintf(w, "> **The trace scenario failed:** %s\n\n", oneLine(msg))
	}
	if t == nil {
		return
	}
	fmt.Fprintf(w, "**The trace.** `%s`: the Azure LLM inference trace 2023, conversation service (Patel et al., *Splitwise*, ISCA 2024; CC-BY 4.0), one hour, 19,366 requests with their prompt and output token counts. ", filepath.Base(t.File))
	fmt.Fprintf(w, "Scaled to fit two shared cores: time runs **%d× faster** (the hour takes %.0f s), **one request in %d** is kept (every %d-th in arrival order, so the rate's shape stays), and prompt and output tokens are **divided by %d**. ",
		t.Speedup, t.DurationS, t.Keep, t.Keep, t.TokenDiv)
	fmt.Fprintf(w, "That leaves %d requests, %.1f req/s on average and %.1f at the busiest minute of the original (%.1f s here), %.0f prompt and %.1f output tokens per request on average.\n\n",
		t.Requests, t.MeanRate, t.PeakRate, tracePeakWindow.Seconds(), t.MeanPrompt, t.MeanOutput)
	fmt.Fprintf(w, "**The replicas.** `sluice sim %s --startup-delay %s` run by sluice (`process:`), `max_concurrency: %d` per replica and a queue. A new replica takes %s to answer its health check: in the trace's compressed time that stands for about %s of loading a model. ",
		strings.Join(t.SimFlags, " "), time.Duration(t.StartupMs*float64(time.Millisecond)), traceBatch, time.Duration(t.StartupMs*float64(time.Millisecond)), time.Duration(t.StartupMs*float64(time.Millisecond))*traceSpeedup)
	fmt.Fprintf(w, "Every request is a streamed chat completion with the trace's (scaled) prompt length and `max_tokens` = its output length, sent open loop at its (scaled) arrival time; latencies count from that time.\n\n")
	fmt.Fprintf(w, "**Offered load.** By Little's law, the concurrency the trace offers is each request's service time (20 ms + 50 µs × prompt tokens + 1.25 × 20 ms × output tokens, the sims' timers at a batch of about three) summed over a window, over the window: %.1f on average, %.1f at the busiest %.0f s window. ",
		t.MeanConc, t.PeakConc, tracePeakWindow.Seconds())
	fmt.Fprintf(w, "The fixed pools carry %.0f of a replica's %d slots each: **%d replicas for the peak**, **%d for the mean**. The autoscaler (its settings are in docs/autoscaling.md with the reasons): `autoscale: %s`. ",
		traceTarget, traceBatch, t.PeakReplicas, t.MeanReplicas, t.Autoscale)
	fmt.Fprintf(w, "Every pool first serves the trace's first %v, unmeasured, so it meets the trace warm, as after a day of traffic; the autoscaled pool starts that warm-up at the mean pool's size. Replica-seconds integrate the ready replicas in /api/pools, sampled every 250 ms, over the measured replay only.\n\n", traceWarmup)
	fmt.Fprintf(w, "**Objectives.** A request meets the SLO when it succeeds, its first token arrives within **%.0f ms** (TTFT) and the whole answer within **%.0f ms + %.0f ms per output token** (end to end; 1.5× the sims' per-token time). Goodput counts the requests that meet both, per second of the trace.\n\n",
		t.TTFTSLOMs, t.TTFTSLOMs, t.TPOTSLOMs)

	w.WriteString("| pool | replicas | SLO attainment | TTFT met | end-to-end met | goodput (req/s) | good output tokens/s | TTFT p50 / p99 | latency p99 | replica-seconds | vs peak | alive replica-seconds | vs peak | failed |\n")
	w.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range t.Configs {
		fmt.Fprintf(w, "| %s | %s (max ready %d) | **%s** | %s | %s | %.1f | %.0f | %s / %s | %s | %.0f | **%s** | %.0f | %s | %s |\n",
			c.Name, c.Replicas, c.MaxReady, fmtPct(c.SLOAttainment), fmtPct(c.TTFTAttainment), fmtPct(c.E2EAttainment), c.Goodput, c.GoodTokens,
			fmtMs(c.TTFT.P50), fmtMs(c.TTFT.P99), fmtMs(c.Latency.P99), c.ReplicaSeconds, fmtX(c.VsPeak), c.AliveReplicaSeconds, fmtX(c.AliveVsPeak), fmtCounts(c.Failed))
	}
	w.WriteString("\n")
	if len(t.Configs) == 3 {
		a := t.Configs[0]
		checks := []check{
			{"autoscaler SLO attainment ≥ 95%", fmtPct(a.SLOAttainment), float64(a.SLOAttainment) >= 0.95},
			{"autoscaler replica-seconds ≤ 0.75× the peak pool's", fmtX(a.VsPeak), float64(a.VsPeak) <= 0.75},
		}
		writeChecks(w, checks)
		w.WriteString("\n")
	}
	if f, ok := charts["replicas"]; ok {
		fmt.Fprintf(w, "![replicas over time](%s)\n\n", f)
		w.WriteString("Gray: the load the trace offers, in replicas at the fixed pools' 3 requests per replica. Red: the autoscaler's demand (requests in flight and waiting in the gateway) on the same scale; it aims at 3.5 per replica. Green and blue: the count it asked for and the replicas ready. The two rules are the fixed pools.\n\n")
	}
	if f, ok := charts["ttft"]; ok {
		fmt.Fprintf(w, "![p99 TTFT over time](%s)\n\n", f)
	}
	w.WriteString("Reproduce with `go run ./bench/scenarios -scenarios trace` (about 8 minutes; `-quick` replays the first fifth).\n")
}
