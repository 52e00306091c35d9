package main

import (
	"fmt"
	"slices"
	"strings"
)

// frontierMarkdown writes the frontier scenario's section: the method, the
// frontier of each target and the chart. all adds every measurement, for
// frontier.md.
func (r *report) frontierMarkdown(b *strings.Builder, charts map[string]string, all bool) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	f := r.Frontier
	p("## Throughput frontier: the highest rate each proxy sustains within +1 ms and +5 ms of p99\n\n")
	p("The overhead scenario's fast backend and small chat completion, sent open loop at a **constant rate**, wrk2-style, by the suite's own lean client over %d keep-alive connections: ", f.Conns)
	p("request *i* is due at *i*/rate, a free connection takes the next request and sends it when due, and its latency runs from the due time, ")
	p("so a request that waited for a connection because earlier answers were slow counts its wait (no coordinated omission). ")
	p("Offered rates lie on a grid of %d steps per doubling from %g req/s; the search doubles the rate while some target is still within a bound, ", f.Steps, f.Base)
	p("then bisects each target's bracket down to one grid step (down to %g req/s for a target over a bound already at the first rate). ", f.rate(f.KMin))
	p("Each measurement lasts %s after %s of warmup. At each rate the backend is measured directly in the same round as the proxies, the order rotating between rounds, ", f.Duration, f.Warmup)
	p("and a proxy's **added p99** is its p99 minus the direct p99 of that round. ")
	p("A rate is **sustained** when at least %.0f%% of the offered requests were answered with no error and the direct measurement of the round sustained it too; ", 100*frontierSustained)
	p("it is **within a bound** when, in addition, the added p99 is at most the bound. ")
	p("A target over a bound at a rate is measured again, up to %d looks, and counts as within if any look was (other work on the machine only ever makes a look worse).\n\n", f.Tries)
	p("**The load generator runs on the same %d cores** as the backend and the proxy, and costs more per request than the proxies do: ", r.Machine.CPUs)
	p("the direct row's frontier, the highest rate the generator and the backend sustain together, is the **ceiling** of this measurement, and no proxy can be seen above it. ")
	p("\"× direct\" is a frontier over that ceiling.\n\n")
	if f.Error != "" {
		p("**Scenario error:** %s\n\n", firstLine(f.Error))
	}
	p("| target | within +1 ms p99 (req/s) | × direct | first rate over +1 ms: why | within +5 ms p99 (req/s) | × direct | first rate over +5 ms: why |\n")
	p("|---|---:|---:|---|---:|---:|---|\n")
	ceiling := 0.0
	if d := f.row("direct"); d != nil && len(d.Edges) > 0 {
		ceiling = d.Edges[0].Rate
	}
	for _, row := range f.Rows {
		if row.Error != "" && len(row.Points) == 0 {
			p("| %s | failed: %s | | | | | |\n", row.Target, cell(row.Error))
			continue
		}
		direct := row.Target == "direct"
		name := row.Target
		if direct {
			name = "direct (the ceiling)"
		}
		p("| %s", name)
		for _, bound := range f.BoundsMS {
			e := row.edge(bound)
			if e == nil {
				p(" | - | - | -")
				continue
			}
			ratio := "-"
			if ceiling > 0 && e.Rate > 0 {
				ratio = fmt.Sprintf("%.2f", e.Rate/ceiling)
			}
			p(" | %s | %s | %s", f.rateCell(e), ratio, f.nextCell(e, direct))
		}
		p(" |\n")
	}
	if lo, mid, hi, n := f.directSpread(); n > 0 {
		p("\nThe noise to hold these bounds against: over the %d rounds whose direct measurement sustained its rate, the direct p99 ranged from %.2f to %.2f ms (median %.2f ms). ", n, lo, hi, mid)
		p("A bound well inside that range is met or missed largely by the luck of the round, which the further looks only soften.\n")
	}
	p("\nFor the direct row both bounds are the same: the highest rate sustained at all. ")
	p("\"≥\" marks a target never seen over the bound up to the highest rate tried, \"<\" one over it already at the lowest.\n\n")
	if c, ok := charts["frontier"]; ok {
		p("![frontier](%s)\n\n", c)
	}
	if !all {
		p("Every measurement is in [frontier.md](frontier.md).\n\n")
		return
	}
	p("### Every measurement\n\n")
	p("In the order taken; \"again\" marks a further look at a rate where the first was over a bound. Times in ms.\n\n")
	p("| target | offered req/s | look | answered req/s | errors | p50 | p99 | direct p99 | added p99 |\n")
	p("|---|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range f.Rows {
		for _, pt := range row.Points {
			look := "first"
			if pt.Retry {
				look = "again"
			}
			if pt.Error != "" {
				p("| %s | %.0f | %s | failed: %s | | | | | |\n", row.Target, pt.Rate, look, cell(pt.Error))
				continue
			}
			added := "-"
			if row.Target != "direct" {
				added = fmt.Sprintf("%+.3f", pt.AddedP99)
			}
			p("| %s | %.0f | %s | %.0f | %d | %.3f | %.3f | %.3f | %s |\n", row.Target, pt.Rate, look, pt.Achieved, pt.Errors, pt.P50, pt.P99, pt.DirectP99, added)
		}
	}
	p("\n")
}

// rateCell prints an edge's frontier rate.
func (f *frontierResult) rateCell(e *frontierEdge) string {
	switch {
	case e.Rate == 0:
		return fmt.Sprintf("< %.0f", f.rate(f.KMin))
	case e.Next == 0:
		return fmt.Sprintf("≥ %.0f", e.Rate)
	}
	return fmt.Sprintf("**%.0f**", e.Rate)
}

// nextCell prints the rate above an edge's frontier and what kept the
// target from the bound there.
func (f *frontierResult) nextCell(e *frontierEdge, direct bool) string {
	if e.Next == 0 || e.NextAt == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f: %s", e.Next, e.NextAt.why(direct, e.BoundMS))
}

// memoryMarkdown writes the memory scenario's section.
func (r *report) memoryMarkdown(b *strings.Builder, charts map[string]string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	m := r.Memory
	p("## Memory per idle keep-alive connection and per open stream\n\n")
	p("Each proxy in front of the overhead scenario's backend, in a fresh instance for each measurement, at its default policy and without access log. ")
	p("Its memory is the sum over its processes (NGINX's master and workers, the others one process each): ")
	p("**Pss** (proportional set size, from `/proc/PID/smaps_rollup`, each shared page counted once across the processes) and **RSS**. ")
	p("It is read after the instance served and closed %d connections (so that what it allocates once, such as its upstream connections, is in the baseline), ", memoryWarm)
	p("and again %s after the clients opened:\n\n", m.Settle)
	p("- **idle**: %d keep-alive connections, each sending one small chat completion (proxied to the backend), reading the answer and staying open, idle;\n", m.Conns)
	p("- **streams**: %d streamed chat completions, each on a connection of its own, the backend sending one SSE event every %s (so every stream stays open, and moving, while measured); ", m.Streams, m.StreamEvery)
	p("a stream holds a client and an upstream connection in the proxy.\n\n")
	p("\"per\" is (after − before) / the connections or streams still open when the second reading was taken. ")
	p("For the Go proxies (sluice, Caddy) RSS includes garbage the collector has not returned to the system yet, as an operator would see it. ")
	p("The suite's open-file limit, which the proxies inherit, was %d.\n\n", m.FileLimit)
	if m.Error != "" {
		p("**Scenario error:** %s\n\n", firstLine(m.Error))
	}
	p("| proxy | processes | idle conns open | Pss before → after (MiB) | KiB per idle conn (Pss / RSS) | streams open | Pss before → after (MiB) | KiB per stream (Pss / RSS) |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range m.Rows {
		p("| %s | %s | %s |\n", row.Target, procsCell(row), strings.Join([]string{memCells(row.Idle), memCells(row.Streams)}, " | "))
	}
	p("\n")
	if c, ok := charts["memory"]; ok {
		p("![memory](%s)\n\n", c)
	}
}

func procsCell(row *memoryRow) string {
	for _, s := range []*memorySample{row.Idle, row.Streams} {
		if s != nil && s.After.Processes > 0 {
			return fmt.Sprint(s.After.Processes)
		}
	}
	return "-"
}

// memCells prints a sample's three cells: how many were open, the memory
// before and after, and the memory per connection or stream.
func memCells(s *memorySample) string {
	switch {
	case s == nil:
		return "- | - | -"
	case s.Error != "":
		return fmt.Sprintf("failed: %s | | ", cell(s.Error))
	}
	open := fmt.Sprint(s.Open)
	if s.Open != s.Wanted {
		open = fmt.Sprintf("%d of %d", s.Open, s.Wanted)
	}
	return fmt.Sprintf("%s | %.1f → %.1f | **%.1f** / %.1f", open, float64(s.Before.Pss)/1024, float64(s.After.Pss)/1024, s.PssPer, s.RssPer)
}

// directSpread is the lowest, median and highest direct p99 over the
// rounds whose direct measurement sustained its rate, and how many there
// were. Each proxy's look carries its round's direct p99.
func (f *frontierResult) directSpread() (lo, mid, hi float64, n int) {
	seen := map[[2]float64]bool{}
	var vs []float64
	for _, row := range f.Rows {
		for _, pt := range row.Points {
			key := [2]float64{pt.Rate, pt.DirectP99}
			if !pt.DirectSustained || seen[key] {
				continue
			}
			seen[key] = true
			vs = append(vs, pt.DirectP99)
		}
	}
	if len(vs) == 0 {
		return 0, 0, 0, 0
	}
	return slices.Min(vs), median(vs), slices.Max(vs), len(vs)
}
