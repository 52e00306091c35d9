// Command compare is sluice's comparison suite: in one run on one machine it
// measures sluice against HAProxy, NGINX and Caddy in front of the same
// backends, and writes the results to bench/results/ as Markdown tables,
// PNG charts and JSON. `make bench-compare` runs it from the repository
// root; docs/benchmarks.md explains the method.
//
// The scenarios run against a direct-to-backend baseline and each proxy:
//
//   - overhead: a tiny fast backend; closed-loop throughput with wrk and
//     open-loop latency at a moderate fixed rate with sluice's load
//     generator (internal/bench); Go's httputil.ReverseProxy runs too, as
//     the floor of a proxy built on net/http;
//   - streaming: one simulated model server; time to first token and
//     inter-token latency of SSE streams;
//   - balancing: several simulated replicas, some of them slow; the same
//     open-loop load through each balancing policy of each proxy, and
//     through an oracle pool of only the healthy replicas;
//   - frontier: the fast backend again; the highest constant request rate
//     each proxy sustains with its p99 at most 1 ms and 5 ms above the
//     backend's own at the same rate;
//   - memory: what each proxy's processes hold per idle keep-alive
//     connection (10,000 of them) and per open SSE stream (1,000).
//
// Every number is reported next to the baseline of the same run, because
// the machines it runs on are shared and noisy. The suite installs what it
// needs from Debian packages when it runs as root, starts every server as a
// child process on a free loopback port, and stops them all when it ends or
// is interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// helpers are the servers this executable runs, as child processes of the
// suite, when its first argument names one.
var helpers = map[string]func(args []string) error{
	backendCommand: runBackend,
	goProxyCommand: runGoProxy,
}

func main() {
	if len(os.Args) > 1 {
		if helper, ok := helpers[os.Args[1]]; ok {
			if err := helper(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
}

// options are the suite's settings, from the command line.
type options struct {
	quick       bool
	out         string
	scenarios   set
	proxies     set
	skipInstall bool
	keepScratch bool
	rounds      int
	warmup      time.Duration

	wrkThreads, wrkConns int
	wrkDuration          time.Duration
	latencyRate          float64
	latencyDuration      time.Duration

	streamRate     float64
	streamDuration time.Duration
	streamTokens   int

	balReplicas   int
	balSlow       int
	balSlowdown   float64
	balLoad       float64
	balDuration   time.Duration
	balWarmup     time.Duration
	balTimeout    time.Duration
	balStream     bool
	balCrossCheck bool

	microCount int

	frontierBase     float64
	frontierSteps    int
	frontierMax      float64
	frontierDuration time.Duration
	frontierWarmup   time.Duration
	frontierTries    int
	frontierConns    int

	memConns       int
	memStreams     int
	memStreamEvery time.Duration
	memSettle      time.Duration

	waitLoad float64
	waitMax  time.Duration

	render string
}

// Scenario and proxy names accepted by -scenarios and -proxies.
var (
	allScenarios = []string{"overhead", "streaming", "balancing", "micro", "frontier", "memory"}
	allProxies   = []string{"sluice", "haproxy", "nginx", "caddy"}
)

func parseFlags(args []string) (*options, error) {
	o := &options{
		scenarios: newSet(allScenarios...),
		proxies:   newSet(allProxies...),
	}
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: go run ./bench/compare [flags]

Runs sluice's comparison suite against HAProxy, NGINX and Caddy from the
repository root and writes bench/results/ (see docs/benchmarks.md).
-quick is a smoke run of a few minutes that writes to bench/.quick/.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.quick, "quick", false, "smoke run: short durations, one round, one balancing policy per proxy (two for sluice), no cross-check, no micro-benchmark, a coarser frontier grid")
	fs.StringVar(&o.out, "out", "", "results directory (default bench/results, or bench/.quick with -quick)")
	fs.Var(o.scenarios, "scenarios", "comma-separated scenarios to run: "+strings.Join(allScenarios, ","))
	fs.Var(o.proxies, "proxies", "comma-separated proxies to measure: "+strings.Join(allProxies, ","))
	fs.BoolVar(&o.skipInstall, "skip-install", false, "do not apt-get install missing tools")
	fs.BoolVar(&o.keepScratch, "keep-scratch", false, "keep the scratch directory (rendered configs, server logs)")
	fs.IntVar(&o.rounds, "rounds", 3, "repetitions of each overhead and streaming measurement, interleaved across targets; the best round is reported")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each overhead and streaming measurement")

	fs.IntVar(&o.wrkThreads, "wrk-threads", 2, "overhead: wrk threads")
	fs.IntVar(&o.wrkConns, "wrk-connections", 64, "overhead: wrk connections (the fixed client concurrency)")
	fs.DurationVar(&o.wrkDuration, "wrk-duration", 5*time.Second, "overhead: wrk measurement length")
	fs.Float64Var(&o.latencyRate, "latency-rate", 500, "overhead: open-loop rate (req/s) of the added-latency measurement")
	fs.DurationVar(&o.latencyDuration, "latency-duration", 6*time.Second, "overhead: length of the added-latency measurement")

	fs.Float64Var(&o.streamRate, "stream-rate", 20, "streaming: open-loop rate (req/s)")
	fs.DurationVar(&o.streamDuration, "stream-duration", 5*time.Second, "streaming: measurement length")
	fs.IntVar(&o.streamTokens, "stream-tokens", 64, "streaming: output tokens per request")

	fs.IntVar(&o.balReplicas, "balance-replicas", 6, "balancing: simulated replicas")
	fs.IntVar(&o.balSlow, "balance-slow", 1, "balancing: how many of them are slow")
	fs.Float64Var(&o.balSlowdown, "balance-slowdown", 8, "balancing: the slow replicas' --slowdown")
	fs.Float64Var(&o.balLoad, "balance-load", 0.65, "balancing: offered load as a fraction of the healthy replicas' capacity")
	fs.DurationVar(&o.balDuration, "balance-duration", 20*time.Second, "balancing: measurement length per balancer")
	fs.DurationVar(&o.balWarmup, "balance-warmup", 4*time.Second, "balancing: unmeasured load before each measurement")
	fs.DurationVar(&o.balTimeout, "balance-timeout", 15*time.Second, "balancing: client timeout per request (a timed-out request counts as infinitely slow)")
	fs.BoolVar(&o.balStream, "balance-stream", true, "balancing: streamed requests (also reports TTFT)")
	fs.BoolVar(&o.balCrossCheck, "balance-crosscheck", true, "balancing: also run sluice's round_robin, p2c_ewma and the oracle with the other -balance-stream setting")

	fs.IntVar(&o.microCount, "micro-count", 3, "micro: -count of go test -bench BenchmarkProxyOverhead")

	fs.Float64Var(&o.frontierBase, "frontier-base", 500, "frontier: the first rate (req/s) of the search, which doubles from there")
	fs.IntVar(&o.frontierSteps, "frontier-steps", 8, "frontier: grid points per doubling of the rate, the resolution the search bisects down to")
	fs.Float64Var(&o.frontierMax, "frontier-max", 64000, "frontier: the highest rate (req/s) tried")
	fs.DurationVar(&o.frontierDuration, "frontier-duration", 3*time.Second, "frontier: measurement length at each rate")
	fs.DurationVar(&o.frontierWarmup, "frontier-warmup", time.Second, "frontier: unmeasured load before each measurement")
	fs.IntVar(&o.frontierConns, "frontier-connections", 64, "frontier: keep-alive connections the constant-rate load shares")
	fs.IntVar(&o.frontierTries, "frontier-tries", 3, "frontier: looks a target gets at a rate (each with its own direct measurement) before it counts as over a bound there")

	fs.IntVar(&o.memConns, "memory-connections", 10000, "memory: idle keep-alive connections held open")
	fs.IntVar(&o.memStreams, "memory-streams", 1000, "memory: SSE streams held open")
	fs.DurationVar(&o.memStreamEvery, "memory-stream-every", time.Second, "memory: time between a stream's events")
	fs.DurationVar(&o.memSettle, "memory-settle", 3*time.Second, "memory: wait between opening the connections and reading the proxy's memory")

	fs.Float64Var(&o.waitLoad, "wait-load", 0, "before starting, wait while the 1-minute load average is above this (0: do not wait)")
	fs.DurationVar(&o.waitMax, "wait-max", 5*time.Minute, "longest wait for -wait-load")
	fs.StringVar(&o.render, "render", "", "measure nothing: re-render README.md, the charts and the targets from DIR/results.json")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := o.scenarios.only(allScenarios); err != nil {
		return nil, fmt.Errorf("-scenarios: %w", err)
	}
	if err := o.proxies.only(allProxies); err != nil {
		return nil, fmt.Errorf("-proxies: %w", err)
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"rounds":            func() { o.rounds = 1 },
			"wrk-duration":      func() { o.wrkDuration = 3 * time.Second },
			"latency-duration":  func() { o.latencyDuration = 3 * time.Second },
			"stream-duration":   func() { o.streamDuration = 3 * time.Second },
			"balance-duration":  func() { o.balDuration = 6 * time.Second },
			"balance-warmup":    func() { o.balWarmup = 2 * time.Second },
			"balance-timeout":   func() { o.balTimeout = 5 * time.Second },
			"frontier-steps":    func() { o.frontierSteps = 4 },
			"frontier-duration": func() { o.frontierDuration = 2 * time.Second },
			"frontier-warmup":   func() { o.frontierWarmup = 500 * time.Millisecond },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
		if !set["scenarios"] {
			o.scenarios.remove("micro")
		}
		if !set["balance-crosscheck"] {
			o.balCrossCheck = false
		}
	}
	if o.out == "" {
		o.out = "bench/results"
		if o.quick {
			o.out = "bench/.quick"
		}
	}
	var errs []error
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"-rounds", o.rounds >= 1},
		{"-wrk-threads", o.wrkThreads >= 1},
		{"-wrk-connections", o.wrkConns >= o.wrkThreads},
		{"-latency-rate", o.latencyRate > 0},
		{"-stream-rate", o.streamRate > 0},
		{"-stream-tokens", o.streamTokens >= 2},
		{"-balance-replicas", o.balReplicas >= 2},
		{"-balance-slow", o.balSlow >= 0 && o.balSlow < o.balReplicas},
		{"-balance-slowdown", o.balSlowdown >= 1},
		{"-balance-load", o.balLoad > 0 && o.balLoad <= 2},
		{"-micro-count", o.microCount >= 1},
		{"-frontier-base", o.frontierBase >= 1},
		{"-frontier-steps", o.frontierSteps >= 1 && o.frontierSteps <= 32},
		{"-frontier-max", o.frontierMax >= 2*o.frontierBase},
		{"-frontier-tries", o.frontierTries >= 1},
		{"-frontier-connections", o.frontierConns >= 1},
		{"-memory-connections", o.memConns >= 1},
		{"-memory-streams", o.memStreams >= 1},
		{"-memory-stream-every", o.memStreamEvery > 0},
	} {
		if !c.ok {
			errs = append(errs, fmt.Errorf("%s: value out of range", c.name))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"-wrk-duration", o.wrkDuration}, {"-latency-duration", o.latencyDuration},
		{"-stream-duration", o.streamDuration}, {"-balance-duration", o.balDuration},
		{"-balance-timeout", o.balTimeout}, {"-frontier-duration", o.frontierDuration},
	} {
		if d.v < time.Second {
			errs = append(errs, fmt.Errorf("%s: %v is shorter than 1s", d.name, d.v))
		}
	}
	return o, errors.Join(errs...)
}

// set is a flag.Value holding a comma-separated list of names.
type set map[string]bool

func newSet(names ...string) set {
	s := set{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

func (s set) String() string {
	var names []string
	for _, n := range append(allScenarios, allProxies...) {
		if s[n] {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}

func (s set) Set(v string) error {
	clear(s)
	for n := range strings.SplitSeq(v, ",") {
		if n = strings.TrimSpace(n); n != "" {
			s[n] = true
		}
	}
	return nil
}

func (s set) remove(n string) { delete(s, n) }

// only reports names in s that are not in allowed.
func (s set) only(allowed []string) error {
	for n := range s {
		ok := false
		for _, a := range allowed {
			ok = ok || a == n
		}
		if !ok {
			return fmt.Errorf("unknown name %q (known: %s)", n, strings.Join(allowed, ","))
		}
	}
	return nil
}
