package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// microRow is one sub-benchmark of BenchmarkProxyOverhead: the median over
// -micro-count runs.
type microRow struct {
	Name        string    `json:"name"`
	NsPerOp     float64   `json:"ns_per_op"`
	BytesPerOp  float64   `json:"bytes_per_op"`
	AllocsPerOp float64   `json:"allocs_per_op"`
	Samples     []float64 `json:"ns_per_op_samples"`
	// AddedNs is NsPerOp minus the "direct" sub-benchmark's.
	AddedNs float64 `json:"added_ns_per_op"`
}

// microResult is the micro scenario's outcome.
type microResult struct {
	Command string     `json:"command"`
	Rows    []microRow `json:"rows"`
	Error   string     `json:"error,omitempty"`
}

var benchLineRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op(?:\s+([0-9.]+) B/op)?(?:\s+([0-9.]+) allocs/op)?`)

// parseGoBench reads `go test -bench` output into one row per benchmark
// (the part of its name after the first "/", or the whole name), keeping
// the median of repeated runs, in order of first appearance.
func parseGoBench(out string) []microRow {
	type acc struct {
		ns, bytes, allocs []float64
	}
	var order []string
	accs := map[string]*acc{}
	for line := range strings.Lines(out) {
		m := benchLineRE.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		name := m[1]
		if _, sub, ok := strings.Cut(name, "/"); ok {
			name = sub
		}
		a := accs[name]
		if a == nil {
			a = &acc{}
			accs[name] = a
			order = append(order, name)
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		a.ns = append(a.ns, ns)
		if m[3] != "" {
			v, _ := strconv.ParseFloat(m[3], 64)
			a.bytes = append(a.bytes, v)
		}
		if m[4] != "" {
			v, _ := strconv.ParseFloat(m[4], 64)
			a.allocs = append(a.allocs, v)
		}
	}
	rows := make([]microRow, 0, len(order))
	for _, name := range order {
		a := accs[name]
		rows = append(rows, microRow{
			Name: name, NsPerOp: median(a.ns), BytesPerOp: median(a.bytes), AllocsPerOp: median(a.allocs),
			Samples: slices.Clone(a.ns),
		})
	}
	var direct float64
	for _, r := range rows {
		if r.Name == "direct" {
			direct = r.NsPerOp
		}
	}
	if direct > 0 {
		for i := range rows {
			rows[i].AddedNs = rows[i].NsPerOp - direct
		}
	}
	return rows
}

// runMicro runs sluice's own in-process proxy benchmark.
func (s *suite) runMicro(ctx context.Context) *microResult {
	argv := []string{"go", "test", "-run", "^$", "-bench", "BenchmarkProxyOverhead", "-benchmem",
		"-count", strconv.Itoa(s.opts.microCount), "./internal/gateway"}
	res := &microResult{Command: strings.Join(argv, " ")}
	out, err := procs.Run(ctx, s.root, argv...)
	if err != nil {
		res.Error = fmt.Sprintf("%v: %s", err, tail(out, 10))
		return res
	}
	res.Rows = parseGoBench(out)
	if len(res.Rows) == 0 {
		res.Error = "no benchmark lines in the output: " + tail(out, 10)
	}
	return res
}
