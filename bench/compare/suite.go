package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/hostinfo"
	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// suite is one run of the comparison: its settings, where things are, and
// the servers it started.
type suite struct {
	opts      *options
	root      string // repository root
	configs   string // bench/configs
	scratch   string // rendered configs and server logs
	sluiceBin string
	sup       *procs.Supervisor
	start     time.Time
	// fileLimit is the suite's RLIMIT_NOFILE, which the servers it starts
	// inherit, and maxConn the client connections a proxy is configured
	// for within it.
	fileLimit uint64
	maxConn   int
	// problems are things that went wrong without stopping the run (a proxy
	// that did not start), reported in the results.
	problems []string
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

// problem records and logs something that went wrong but did not stop the
// run.
func (s *suite) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.problems = append(s.problems, msg)
	s.logf("PROBLEM: %s", firstLine(msg))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// enabledProxies are the proxies -proxies selected, in the suite's order.
func (s *suite) enabledProxies() []proxy {
	var ps []proxy
	for _, p := range proxies {
		if s.opts.proxies[p.Name] {
			ps = append(ps, p)
		}
	}
	return ps
}

func run(ctx context.Context, args []string) error {
	opts, err := parseFlags(args)
	if err != nil {
		return err
	}
	if opts.render != "" {
		rep, err := readReport(opts.render)
		if err != nil {
			return err
		}
		rep.Targets = evaluateTargets(rep)
		return rep.write(opts.render)
	}
	root, err := hostinfo.RepoRoot()
	if err != nil {
		return err
	}
	s := &suite{
		opts:      opts,
		root:      root,
		configs:   filepath.Join(root, "bench", "configs"),
		sluiceBin: filepath.Join(root, "bench", ".bin", "sluice"),
		start:     time.Now(),
	}
	out := opts.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}

	rep := &report{
		Schema:   reportSchema,
		Date:     time.Now().UTC(),
		Command:  commandLine(args),
		Quick:    opts.quick,
		Machine:  hostinfo.Describe(),
		Settings: settingsOf(opts),
	}
	limit, err := raiseFileLimit(fileLimitWanted(opts))
	if err != nil {
		s.problem("%v", err)
	}
	s.fileLimit, s.maxConn = limit, maxConnWithin(limit)
	if !opts.skipInstall {
		if err := install(ctx, s.logf); err != nil {
			s.problem("install: %v", err)
		}
	}
	s.logf("building sluice")
	if err := buildSluice(ctx, root, s.sluiceBin); err != nil {
		return err
	}
	rep.Versions = versions(ctx, s.sluiceBin)
	rep.Commit = hostinfo.GitDescribe(ctx, root)

	if s.scratch, err = os.MkdirTemp("", "sluice-bench-"); err != nil {
		return fmt.Errorf("scratch dir: %w", err)
	}
	if err := os.Chmod(s.scratch, 0o755); err != nil {
		return fmt.Errorf("scratch dir: %w", err)
	}
	logs := filepath.Join(s.scratch, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		return fmt.Errorf("scratch dir: %w", err)
	}
	s.sup = &procs.Supervisor{LogDir: logs}
	defer func() {
		s.sup.StopAll()
		if opts.keepScratch {
			s.logf("scratch directory kept: %s", s.scratch)
		} else {
			_ = os.RemoveAll(s.scratch)
		}
	}()

	if waited := hostinfo.WaitForLoad(ctx, opts.waitLoad, opts.waitMax, s.logf); waited > time.Second {
		rep.WaitedForLoad = waited.Round(time.Second).String()
	}
	rep.LoadStart = hostinfo.LoadAvg()
	s.logf("load average at start: %.2f %.2f %.2f", rep.LoadStart[0], rep.LoadStart[1], rep.LoadStart[2])

	if opts.scenarios["overhead"] {
		rep.Overhead = s.overhead(ctx)
	}
	if opts.scenarios["streaming"] && ctx.Err() == nil {
		rep.Streaming = s.streaming(ctx)
	}
	if opts.scenarios["balancing"] && ctx.Err() == nil {
		rep.Balancing = s.balancing(ctx)
	}
	if opts.scenarios["micro"] && ctx.Err() == nil {
		s.logf("micro: go test -bench BenchmarkProxyOverhead ./internal/gateway")
		rep.Micro = s.runMicro(ctx)
		if rep.Micro.Error != "" {
			s.problem("micro: %s", rep.Micro.Error)
		}
	}
	if opts.scenarios["frontier"] && ctx.Err() == nil {
		rep.Frontier = s.frontier(ctx)
	}
	if opts.scenarios["memory"] && ctx.Err() == nil {
		rep.Memory = s.memory(ctx)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}

	rep.LoadEnd = hostinfo.LoadAvg()
	rep.Elapsed = time.Since(s.start).Round(time.Second).String()
	rep.Problems = s.problems
	rep.Targets = evaluateTargets(rep)
	s.logf("load average at end: %.2f %.2f %.2f", rep.LoadEnd[0], rep.LoadEnd[1], rep.LoadEnd[2])
	if err := rep.write(out); err != nil {
		return err
	}
	s.logf("results written to %s", out)
	for _, t := range rep.Targets {
		s.logf("target %-50s %s", t.Goal, t.Verdict)
	}
	return nil
}

// fileLimitWanted is the RLIMIT_NOFILE the suite asks for: the memory
// scenario's idle connections take a descriptor each in the suite and in
// the proxy.
func fileLimitWanted(o *options) uint64 { return uint64(o.memConns) + 4096 }

// maxConn is the most client connections a proxy is configured for, when
// the file limit allows.
const maxConn = 20000

// maxConnWithin is how many client connections a proxy can be configured
// for within the file limit, keeping some descriptors for everything else.
func maxConnWithin(limit uint64) int {
	return int(min(maxConn, max(int64(limit)-1024, 1024)))
}

// scenarioFailed records err, which stopped scenario, as a problem and
// returns its text for the scenario's result. An interruption is not a
// problem.
func (s *suite) scenarioFailed(ctx context.Context, scenario string, err error) string {
	if ctx.Err() == nil {
		s.problem("%s: %v", scenario, err)
	}
	return err.Error()
}

// commandLine is how the results say the suite was run.
func commandLine(args []string) string {
	cmd := "go run ./bench/compare"
	if len(args) > 0 {
		cmd += " " + strings.Join(args, " ")
	}
	return cmd
}
