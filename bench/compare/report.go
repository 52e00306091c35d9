package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/hostinfo"
)

// reportSchema names the layout of results.json.
const reportSchema = "sluice.bench-compare/v1"

// report is everything one run of the suite found; results.json is its
// JSON encoding and README.md its Markdown rendering.
type report struct {
	Schema        string            `json:"schema"`
	Date          time.Time         `json:"date"`
	Command       string            `json:"command"`
	Quick         bool              `json:"quick"`
	Commit        string            `json:"commit"`
	Elapsed       string            `json:"elapsed"`
	Machine       hostinfo.Machine  `json:"machine"`
	Versions      map[string]string `json:"versions"`
	Settings      settings          `json:"settings"`
	WaitedForLoad string            `json:"waited_for_load,omitempty"`
	LoadStart     [3]float64        `json:"load_average_start"`
	LoadEnd       [3]float64        `json:"load_average_end"`
	Targets       []targetCheck     `json:"targets"`
	Overhead      *overheadResult   `json:"overhead,omitempty"`
	Streaming     *streamingResult  `json:"streaming,omitempty"`
	Balancing     *balancingResult  `json:"balancing,omitempty"`
	Micro         *microResult      `json:"micro,omitempty"`
	Frontier      *frontierResult   `json:"frontier,omitempty"`
	Memory        *memoryResult     `json:"memory,omitempty"`
	Problems      []string          `json:"problems"`
}

// settings are the options a run's numbers depend on.
type settings struct {
	Rounds          int     `json:"rounds"`
	Warmup          string  `json:"warmup"`
	WrkThreads      int     `json:"wrk_threads"`
	WrkConnections  int     `json:"wrk_connections"`
	WrkDuration     string  `json:"wrk_duration"`
	LatencyRate     float64 `json:"latency_rate"`
	LatencyDuration string  `json:"latency_duration"`
	StreamRate      float64 `json:"stream_rate"`
	StreamDuration  string  `json:"stream_duration"`
	StreamTokens    int     `json:"stream_tokens"`
}

func settingsOf(o *options) settings {
	return settings{
		Rounds: o.rounds, Warmup: o.warmup.String(),
		WrkThreads: o.wrkThreads, WrkConnections: o.wrkConns, WrkDuration: o.wrkDuration.String(),
		LatencyRate: o.latencyRate, LatencyDuration: o.latencyDuration.String(),
		StreamRate: o.streamRate, StreamDuration: o.streamDuration.String(), StreamTokens: o.streamTokens,
	}
}

// readReport reads the results.json in dir.
func readReport(dir string) (*report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return nil, err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	if r.Schema != reportSchema {
		return nil, fmt.Errorf("%s: schema %q, want %q", filepath.Join(dir, "results.json"), r.Schema, reportSchema)
	}
	return &r, nil
}

// write puts results.json, README.md and the charts in dir.
func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("results.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("results.json: %w", err)
	}
	charts, err := drawCharts(r, dir)
	if err != nil {
		return err
	}
	md := r.markdown(charts)
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte(md), 0o644); err != nil {
		return fmt.Errorf("README.md: %w", err)
	}
	if r.Frontier != nil {
		var b strings.Builder
		r.header(&b, "sluice, HAProxy, NGINX and Caddy — throughput frontier")
		r.frontierMarkdown(&b, charts, true)
		if err := os.WriteFile(filepath.Join(dir, "frontier.md"), []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("frontier.md: %w", err)
		}
	}
	if r.Memory != nil {
		var b strings.Builder
		r.header(&b, "sluice, HAProxy, NGINX and Caddy — memory per connection and per stream")
		r.memoryMarkdown(&b, charts)
		if err := os.WriteFile(filepath.Join(dir, "memory.md"), []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("memory.md: %w", err)
		}
	}
	return nil
}

// markdown renders the report; charts maps a chart's name to its file.
func (r *report) markdown(charts map[string]string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	r.header(&b, "sluice vs HAProxy, NGINX and Caddy — benchmark results")

	p("## Targets\n\n| goal | measured | verdict |\n|---|---|---|\n")
	for _, t := range r.Targets {
		p("| %s | %s | %s |\n", t.Goal, t.Measured, t.Verdict)
	}
	p("\n")

	if r.Overhead != nil {
		r.overheadMarkdown(&b, charts)
	}
	if r.Frontier != nil {
		r.frontierMarkdown(&b, charts, false)
	}
	if r.Memory != nil {
		r.memoryMarkdown(&b, charts)
	}
	if r.Streaming != nil {
		r.streamingMarkdown(&b, charts)
	}
	if r.Balancing != nil {
		r.balancingMarkdown(&b, charts)
	}
	if r.Micro != nil {
		r.microMarkdown(&b)
	}
	p("## Problems during the run\n\n")
	if len(r.Problems) == 0 {
		p("None.\n")
	}
	for _, pr := range r.Problems {
		p("- %s\n", strings.ReplaceAll(firstLine(pr), "|", "\\|"))
	}
	p("\nAll numbers, per round, are in [results.json](results.json).\n")
	return b.String()
}

// header writes a results page's title and the table that says where,
// when and how the run was made.
func (r *report) header(b *strings.Builder, title string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	if r.Quick {
		title += " (quick smoke run: short and noisy, not for conclusions)"
	}
	p("# %s\n\n", title)
	p("Written by `make bench-compare` (`bench/compare`); the method is in [docs/benchmarks.md](../../docs/benchmarks.md). ")
	p("Every proxy ran on the same machine, in the same run, against the same backends; ")
	p("compare numbers **within** a table, not with other runs or machines.\n\n")

	p("| | |\n|---|---|\n")
	p("| date | %s |\n", r.Date.Format("2006-01-02 15:04 MST"))
	p("| command | `%s` |\n", r.Command)
	p("| sluice commit | `%s` |\n", r.Commit)
	p("| run time | %s |\n", r.Elapsed)
	m := r.Machine
	p("| machine | %d CPUs (`nproc`), %s, %.1f GiB memory |\n", m.CPUs, m.CPUModel, m.MemoryGB)
	p("| system | %s, Linux %s, %s |\n", m.OS, m.Kernel, m.Go)
	var names []string
	for k := range r.Versions {
		names = append(names, k)
	}
	slices.Sort(names)
	var vs []string
	for _, k := range names {
		vs = append(vs, fmt.Sprintf("%s %s", k, r.Versions[k]))
	}
	p("| versions | %s |\n", strings.Join(vs, " · "))
	p("| load average (1/5/15 min) | start %.2f %.2f %.2f · end %.2f %.2f %.2f |\n",
		r.LoadStart[0], r.LoadStart[1], r.LoadStart[2], r.LoadEnd[0], r.LoadEnd[1], r.LoadEnd[2])
	if r.WaitedForLoad != "" {
		p("| waited for load | %s |\n", r.WaitedForLoad)
	}
	p("\nThe machine is shared: a load average near or above its CPU count means other work competed with the benchmark.\n\n")
}

func (r *report) overheadMarkdown(b *strings.Builder, charts map[string]string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	o, st := r.Overhead, r.Settings
	p("## Overhead: a tiny fast backend, direct and through each proxy\n\n")
	p("Throughput: `wrk -t%d -c%d -d%s` (closed loop), the same small chat completion POST on every connection. ", st.WrkThreads, st.WrkConnections, st.WrkDuration)
	p("Latency: sluice's load generator at %g req/s for %s, open loop (Poisson arrivals, no coordinated omission). ", st.LatencyRate, st.LatencyDuration)
	p("Each measurement follows %s of unmeasured warmup and is repeated in %d round(s), the targets' order rotating between rounds; ", st.Warmup, st.Rounds)
	p("each row shows its best round (highest req/s, lowest percentiles; every round is in results.json), because other work on the machine only ever slows a round down. ")
	p("\"× direct\" and \"added\" compare with the direct row's best round. ")
	p("Access logging is off everywhere except the \"sluice (access log)\" row (log level info, written to a file). ")
	p("The %s row is Go's standard reverse proxy with no routing, balancing, health checks or logging, in a process of its own: ", goProxyTarget)
	p("the floor for any proxy built on Go's net/http, sluice and Caddy included.\n\n")
	if o.Error != "" {
		p("**Scenario error:** %s\n\n", firstLine(o.Error))
	}
	p("| target | req/s | × direct | wrk errors | p50 ms | p99 ms | added p50 ms | added p99 ms | failed |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range o.Rows {
		if row.Error != "" && len(row.Wrk) == 0 {
			p("| %s | failed: %s | | | | | | | |\n", row.Target, cell(row.Error))
			continue
		}
		p("| %s | %.0f | %.2f | %d | %.3f | %.3f | %s | %s | %d |\n", row.Target, row.RPS, row.ThroughputRatio, row.WrkErrors,
			row.P50, row.P99, signed(row.AddedP50, row.Target == "direct"), signed(row.AddedP99, row.Target == "direct"), row.Failed)
	}
	p("\n")
	for _, c := range []string{"overhead_throughput", "overhead_latency"} {
		if f, ok := charts[c]; ok {
			p("![%s](%s)\n", c, f)
		}
	}
	p("\n")
}

func (r *report) streamingMarkdown(b *strings.Builder, charts map[string]string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	s := r.Streaming
	p("## Streaming: SSE token streams from one simulated model server\n\n")
	p("`sluice sim %s`, %d-word prompts, %d output tokens, open loop at %g req/s for %s, best of %d round(s). ",
		s.Sim, streamPromptTokens, r.Settings.StreamTokens, r.Settings.StreamRate, r.Settings.StreamDuration, r.Settings.Rounds)
	p("TTFT is from the request's scheduled send time to the first content chunk; ITL is every gap between content chunks. ")
	p("A proxy that buffered the stream would show a large added TTFT and an ITL near zero.\n\n")
	if s.Error != "" {
		p("**Scenario error:** %s\n\n", firstLine(s.Error))
	}
	p("| target | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | added TTFT p50 | added TTFT p99 | added ITL p50 | added ITL p99 | failed |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range s.Rows {
		if row.Error != "" && len(row.Rounds) == 0 {
			p("| %s | failed: %s | | | | | | | | |\n", row.Target, cell(row.Error))
			continue
		}
		d := row.Target == "direct"
		p("| %s | %.2f | %.2f | %.3f | %.3f | %s | %s | %s | %s | %d |\n", row.Target,
			row.TTFT.P50, row.TTFT.P99, row.ITL.P50, row.ITL.P99,
			signed(row.AddedTTFTP50, d), signed(row.AddedTTFTP99, d), signed(row.AddedITLP50, d), signed(row.AddedITLP99, d), row.Failed)
	}
	p("\nAll times in ms.\n\n")
	if f, ok := charts["streaming"]; ok {
		p("![streaming](%s)\n\n", f)
	}
}

func (r *report) balancingMarkdown(b *strings.Builder, charts map[string]string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	s := r.Balancing
	p("## Balancing quality: %d replicas, %d of them %g× slower\n\n", s.Replicas, s.Slow, s.SlowSim.Slowdown)
	kind := "non-streamed"
	if s.Stream {
		kind = "streamed"
	}
	p("Replicas: `sluice sim %s` (the slow ones with `--slowdown %g`). ", s.Sim, s.SlowSim.Slowdown)
	p("Requests: %s chat completions, %d-word prompts, %d output tokens. ", kind, s.PromptTokens, s.MaxTokens)
	p("With a full batch one request takes %.0f ms (prefill %s + %s×prompt, then %d tokens at ITL×(1+%g×%d/%d)), ",
		s.ServiceMS, s.Sim.TTFT, s.Sim.PrefillPerToken, s.MaxTokens-1, s.Sim.BatchPenalty, s.Sim.MaxRunning-1, s.Sim.MaxRunning)
	p("so a healthy replica sustains %d/%.3fs = %.1f req/s and a slow one %.1f req/s. ",
		s.Sim.MaxRunning, s.ServiceMS/1000, s.ReplicaCapacity, s.SlowCapacity)
	p("Offered load: **%.1f req/s** open loop (Poisson), %.0f%% of the %d healthy replicas' %.1f req/s, the same for every balancer; ",
		s.Rate, 100*s.Load, s.Replicas-s.Slow, s.HealthyCapacity)
	p("%s measured after %s of warmup, client timeout %s. ", s.Duration, s.Warmup, s.Timeout)
	p("The oracle is sluice round_robin over the healthy replicas only: the best any balancer could do.\n\n")
	p("\"p99 all\" counts every failed request as infinitely slow (∞ when more than 1%% failed); it is the number the targets use. ")
	p("\"slow share\" is the fraction of the requests the replicas completed during the run that the slow ones completed (a fair share would be %.0f%%).\n\n",
		100*float64(s.Slow)/float64(s.Replicas))
	if s.Error != "" {
		p("**Scenario error:** %s\n\n", firstLine(s.Error))
	}
	balancingTable(b, s, s.Stream)
	p("\n")
	if f, ok := charts["balancing"]; ok {
		p("![balancing](%s)\n\n", f)
	}
	var other bool
	for _, row := range s.Rows {
		other = other || row.Stream != s.Stream
	}
	if !other {
		return
	}
	mode := "not streamed"
	if !s.Stream {
		mode = "streamed"
	}
	p("### Cross-check: sluice with the requests %s\n\n", mode)
	p("The same load and replicas. A streamed response's headers leave the replica as soon as it accepts the request, ")
	p("before it queues or computes anything; a non-streamed response's headers come with the whole answer. ")
	p("A balancer that learns from the time to response headers sees the replicas' speed only in the second case.\n\n")
	balancingTable(b, s, !s.Stream)
	p("\n")
}

// balancingTable writes the rows of one streaming mode.
func balancingTable(b *strings.Builder, s *balancingResult, stream bool) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("| balancer | ok / sent | failed | p50 ms | p90 ms | p99 ms | p99 all ms | × oracle | TTFT p50 ms | TTFT p99 ms | slow share |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range s.Rows {
		if row.Stream != stream {
			continue
		}
		if row.Error != "" {
			p("| %s | failed: %s | | | | | | | | | |\n", row.Label(s.Stream), cell(row.Error))
			continue
		}
		ttft50, ttft99 := "-", "-"
		if row.Stream {
			ttft50, ttft99 = fmt.Sprintf("%.0f", row.TTFT.P50), fmt.Sprintf("%.0f", row.TTFT.P99)
		}
		p("| %s | %d / %d | %s | %.0f | %.0f | %.0f | %s | %s | %s | %s | %.1f%% |\n", row.Label(s.Stream), row.OK, row.Sent,
			failures(row), row.Latency.P50, row.Latency.P90, row.Latency.P99,
			msCell(float64(row.P99All)), ratioCell(float64(row.P99Ratio)), ttft50, ttft99, 100*row.SlowShare)
	}
}

func (r *report) microMarkdown(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	m := r.Micro
	p("## sluice's in-process micro-benchmark\n\n`%s` (median of the runs). ", m.Command)
	p("Client, proxy and backend in one process over loopback; \"added\" is the difference to the direct sub-benchmark. ")
	p("`stdlib_reverseproxy` is Go's `httputil.ReverseProxy` with no routing or balancing, the floor for a Go proxy.\n\n")
	if m.Error != "" {
		p("**Error:** %s\n\n", cell(m.Error))
	}
	if len(m.Rows) == 0 {
		return
	}
	p("| sub-benchmark | ns/op | added µs/op | B/op | allocs/op |\n|---|---:|---:|---:|---:|\n")
	for _, row := range m.Rows {
		p("| %s | %.0f | %s | %.0f | %.0f |\n", row.Name, row.NsPerOp, signed(row.AddedNs/1000, row.Name == "direct"), row.BytesPerOp, row.AllocsPerOp)
	}
	p("\n")
}

// signed prints an added value with its sign, or "-" for the baseline.
func signed(v float64, baseline bool) string {
	if baseline {
		return "-"
	}
	return fmt.Sprintf("%+.3f", v)
}

func msCell(v float64) string {
	if math.IsInf(v, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.0f", v)
}

func ratioCell(v float64) string {
	if math.IsInf(v, 1) || math.IsNaN(v) {
		return "∞"
	}
	return fmt.Sprintf("%.2f", v)
}

func failures(row *balancingRow) string {
	if row.Failed+row.Dropped == 0 {
		return "0"
	}
	var kinds []string
	for k := range row.Failures {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%d %s", row.Failures[k], k))
	}
	if row.Dropped > 0 {
		parts = append(parts, fmt.Sprintf("%d dropped", row.Dropped))
	}
	return strings.Join(parts, ", ")
}

// cell makes text safe for one Markdown table cell.
func cell(s string) string {
	s = firstLine(s)
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}
