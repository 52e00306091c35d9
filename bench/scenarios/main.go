// Command scenarios is sluice's resilience and autoscaling benchmark. In
// one run on one machine it starts real `sluice sim` replicas and `sluice
// serve` gateways as child processes on loopback ports, drives open-loop
// load through them, and writes bench/results/scenarios.md, scenarios.json
// and PNG charts. `make bench-scenarios` runs it from the repository root;
// docs/benchmarks.md explains the method.
//
// Four scenarios, each reported as ratios against a baseline measured in
// the same run (the machines it runs on are shared and noisy):
//
//   - overload: 3× a pool's measured capacity against max_concurrency and
//     a bounded queue, then the same without admission control;
//   - kill: kill -9 of one of four replicas under steady, half-streamed
//     load;
//   - priorities: a saturated replica serving high, normal and low
//     priority requests;
//   - autoscale: a bursty trace against sluice's autoscaler, a fixed pool
//     sized for the peak and one sized for the mean.
//
// A fifth, trace, is run only when asked for (-scenarios trace, about 8
// minutes) and writes trace.{md,json} and its chart: one hour of a
// production LLM service replayed against the same three kinds of pools.
//
// Every child runs in a process group of its own and dies with the suite:
// the suite stops them all when it ends or is interrupted, and the kernel
// kills them (Pdeathsig) should the suite itself be killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/hostinfo"
	"github.com/sluice-ai/sluice/bench/internal/procs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench-scenarios:", err)
		os.Exit(1)
	}
}

// simBatch is how many requests a simulated replica runs at once
// (--max-running); the pools' max_concurrency matches it, so requests
// beyond it wait in sluice's queue rather than inside the replica.
const simBatch = 4

// simFlags are the latency flags of every simulated replica: a batch of
// simBatch, 20ms to the first token, 5ms per token. With the scenarios'
// 64-word prompts and 16 output tokens a request alone takes about 100ms.
var simFlags = []string{"--ttft", "20ms", "--itl", "5ms", "--max-running", strconv.Itoa(simBatch)}

// allScenarios are the scenario names -scenarios accepts, in run order;
// defaultScenarios those run without -scenarios.
var (
	allScenarios     = []string{"overload", "kill", "priorities", "autoscale", "trace"}
	defaultScenarios = allScenarios[:4]
)

// options are the suite's settings, from the command line.
type options struct {
	quick     bool
	out       string
	scenarios map[string]bool
	seed      uint64
	keep      bool
	waitLoad  float64
	waitMax   time.Duration
	render    string
	// autoscaleMax is the autoscaler's max replicas; 0 means the size of
	// the pool sized for the peak.
	autoscaleMax int
	// trace is the Azure LLM trace file of the trace scenario.
	trace string
	// bin is a sluice binary to run instead of building ./cmd/sluice.
	bin string
	// traceAutoscale replaces the trace scenario's autoscale settings
	// (without max); traceConfigs, when set, limits the pools it replays
	// against. Both are for tuning.
	traceAutoscale string
	traceConfigs   map[string]bool
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("scenarios", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: go run ./bench/scenarios [flags]

Runs sluice's resilience and autoscaling scenarios from the repository root
and writes bench/results/scenarios.{md,json} and charts (about 8 minutes).
-quick is a smoke run of about two minutes that writes to bench/.quick/.

Flags:
`)
		fs.PrintDefaults()
	}
	var only string
	fs.BoolVar(&o.quick, "quick", false, "smoke run: short durations and a compressed trace; results go to bench/.quick")
	fs.StringVar(&o.out, "out", "", "results directory (default bench/results, or bench/.quick with -quick)")
	fs.StringVar(&only, "scenarios", strings.Join(defaultScenarios, ","), "comma-separated scenarios to run ("+strings.Join(allScenarios, ", ")+")")
	fs.StringVar(&o.trace, "trace", "", "trace scenario: the Azure LLM trace CSV (default ../shared/traces/azure-llm-2023-conv.csv from the repository root)")
	fs.StringVar(&o.bin, "bin", "", "run this sluice binary instead of building ./cmd/sluice")
	fs.StringVar(&o.traceAutoscale, "trace-autoscale", "", "trace scenario: autoscale settings to try, e.g. \"min: 2, target_concurrency: 3\" (max is added)")
	var traceConfigs string
	fs.StringVar(&traceConfigs, "trace-pools", "", "trace scenario: comma-separated pools to replay against (autoscale, fixed-peak, fixed-mean; default all)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the arrival schedules and prompts")
	fs.BoolVar(&o.keep, "keep-scratch", false, "keep the scratch directory (configs, server logs)")
	fs.Float64Var(&o.waitLoad, "wait-load", 0, "before starting, wait while the 1-minute load average is above this (0: do not wait)")
	fs.DurationVar(&o.waitMax, "wait-max", 5*time.Minute, "longest wait for -wait-load")
	fs.IntVar(&o.autoscaleMax, "autoscale-max", 0, "autoscale: the autoscaler's max replicas (0: the size of the pool sized for the peak)")
	fs.StringVar(&o.render, "render", "", "measure nothing: re-render scenarios.md and the charts from DIR/scenarios.json (with -scenarios trace: trace.md from DIR/trace.json)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.scenarios = map[string]bool{}
	for name := range strings.SplitSeq(only, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		known := false
		for _, s := range allScenarios {
			known = known || s == name
		}
		if !known {
			return nil, fmt.Errorf("-scenarios: unknown scenario %q (known: %s)", name, strings.Join(allScenarios, ","))
		}
		o.scenarios[name] = true
	}
	if traceConfigs != "" {
		o.traceConfigs = map[string]bool{}
		for name := range strings.SplitSeq(traceConfigs, ",") {
			o.traceConfigs[strings.TrimSpace(name)] = true
		}
	}
	if o.out == "" {
		o.out = "bench/results"
		if o.quick {
			o.out = "bench/.quick"
		}
	}
	return o, nil
}

func run(ctx context.Context, args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	root, err := hostinfo.RepoRoot()
	if err != nil {
		return err
	}
	out := o.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}
	if o.render != "" {
		if o.scenarios["trace"] && len(o.scenarios) == 1 {
			rep, err := readTraceReport(o.render)
			if err != nil {
				return err
			}
			return writeTraceReport(rep, out)
		}
		rep, err := readReport(o.render)
		if err != nil {
			return err
		}
		return writeReport(rep, out)
	}

	// A binary of the suite's own: the comparison suite builds
	// bench/.bin/sluice and may be running it while this one builds.
	bin := filepath.Join(root, "bench", ".bin", "scenarios", "sluice")
	if o.bin != "" {
		bin = o.bin
	} else {
		logf("building %s", bin)
		if out, err := procs.Run(ctx, root, "go", "build", "-o", bin, "./cmd/sluice"); err != nil {
			return fmt.Errorf("go build ./cmd/sluice: %w\n%s", err, out)
		}
	}
	if o.trace == "" {
		o.trace = filepath.Join(root, "..", "shared", "traces", "azure-llm-2023-conv.csv")
	}
	if o.waitLoad > 0 {
		hostinfo.WaitForLoad(ctx, o.waitLoad, o.waitMax, logf)
	}
	scratch, err := os.MkdirTemp("", "sluice-scenarios-")
	if err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	if o.keep {
		logf("scratch directory (kept): %s", scratch)
	} else {
		defer os.RemoveAll(scratch)
	}
	// A gateway drains its process replicas before it exits, so it gets
	// their stop_timeout on top of the default grace.
	ps := &procs.Supervisor{LogDir: scratch, Grace: 10 * time.Second}
	defer ps.StopAll()
	e := &env{bin: bin, scratch: scratch, procs: ps, logf: logf}

	rep := &report{
		Schema:    schemaVersion,
		Date:      time.Now().UTC(),
		Command:   strings.Join(append([]string{"go run ./bench/scenarios"}, args...), " "),
		Quick:     o.quick,
		Seed:      o.seed,
		Commit:    hostinfo.GitDescribe(ctx, root),
		Machine:   hostinfo.Describe(),
		LoadStart: hostinfo.LoadAvg(),
		SimFlags:  simFlags,
		Errors:    map[string]string{},
	}
	if v, err := procs.Run(ctx, root, bin, "version"); err == nil {
		rep.Version = strings.TrimSpace(strings.SplitN(v, "\n", 2)[0])
	}
	started := time.Now()
	for _, name := range allScenarios {
		if !o.scenarios[name] {
			continue
		}
		logf("scenario %s", name)
		var err error
		switch name {
		case "overload":
			rep.Overload, err = runOverload(ctx, e, o)
		case "kill":
			rep.Kill, err = runKill(ctx, e, o)
		case "priorities":
			rep.Priorities, err = runPriorities(ctx, e, o)
		case "autoscale":
			rep.Autoscale, err = runAutoscale(ctx, e, o)
		case "trace":
			rep.Trace, err = runTrace(ctx, e, o)
		}
		// Whatever a scenario left running goes before the next starts.
		ps.StopAll()
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted during %s; no results written", name)
		}
		if err != nil {
			logf("scenario %s failed: %v", name, err)
			rep.Errors[name] = err.Error()
		}
	}
	rep.ElapsedS = time.Since(started).Seconds()
	rep.LoadEnd = hostinfo.LoadAvg()
	if err := writeReport(rep, out); err != nil {
		return err
	}
	logf("results in %s (%.0fs)", out, rep.ElapsedS)
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d scenario(s) failed; see %s", len(rep.Errors), filepath.Join(out, "scenarios.md"))
	}
	return nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
