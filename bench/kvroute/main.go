// Command kvroute is the proof of the kv_aware balancer: it replays the
// Mooncake conversation trace (real shared prefixes) through simulated
// replicas with a prefix cache, behind sluice with each balancer in turn and
// the same arrivals, then with three gateways that share their prefix index
// over Redis, then a low-reuse control (the Azure conversation trace). Every
// run starts from fresh replicas (empty caches). `make bench-kvroute` runs it
// from the repository root and writes bench/results/kvroute.{md,json,png};
// docs/balancing.md summarizes the results.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
	"github.com/sluice-ai/sluice/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench-kvroute:", err)
		os.Exit(1)
	}
}

type options struct {
	mooncake, azure string
	out             string
	replicas        int
	kvBlocks        int
	prefillPerToken time.Duration
	itl             time.Duration
	maxRunning      int
	tokenScale      float64
	timeScale       float64
	window          time.Duration
	azureWindow     time.Duration
	sloTTFT         time.Duration
	sloITL          time.Duration
	gateways        int
	balancers       []string
	render          string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("kvroute", flag.ContinueOnError)
	fs.StringVar(&o.mooncake, "trace", "../shared/traces/mooncake-conversation.jsonl", "the Mooncake conversation trace")
	fs.StringVar(&o.azure, "control", "../shared/traces/azure-llm-2023-conv.csv", "the low-reuse control trace (Azure CSV); empty skips the control")
	fs.StringVar(&o.out, "out", "bench/results", "results directory")
	fs.IntVar(&o.replicas, "replicas", 6, "simulated replicas")
	fs.IntVar(&o.kvBlocks, "kv-blocks", 32768, "each replica's KV cache in 16-token blocks (running requests and cached prefixes)")
	fs.DurationVar(&o.prefillPerToken, "prefill-per-token", 200*time.Microsecond, "each replica's prefill cost per uncached prompt token")
	fs.DurationVar(&o.itl, "itl", 5*time.Millisecond, "each replica's time per output token with a batch of one")
	fs.IntVar(&o.maxRunning, "max-running", 8, "each replica's batch size")
	fs.Float64Var(&o.tokenScale, "token-scale", 0.125, "multiplies the trace's prompt and output lengths")
	fs.Float64Var(&o.timeScale, "time-scale", 15, "divides the trace's inter-arrival times")
	fs.DurationVar(&o.window, "window", 10*time.Minute, "the stretch of the Mooncake trace replayed, from its start, in trace time")
	fs.DurationVar(&o.azureWindow, "control-window", 5*time.Minute, "the stretch of the control trace replayed, in trace time")
	fs.DurationVar(&o.sloTTFT, "slo-ttft", time.Second, "goodput objective: time to first token")
	fs.DurationVar(&o.sloITL, "slo-itl", 50*time.Millisecond, "goodput objective: mean inter-token latency")
	fs.StringVar(&o.render, "render", "", "measure nothing: re-render kvroute.md and kvroute.png in -out from DIR/kvroute.json")
	fs.IntVar(&o.gateways, "gateways", 3, "gateway processes of the shared-index runs")
	bal := fs.String("balancers", "round_robin,least_request,p2c_ewma,consistent_hash,kv_aware,kv_aware+session", "balancers of the single-gateway runs (kv_aware+session: kv_aware with the session scorer at weight 1)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.balancers = strings.Split(*bal, ",")
	return o, nil
}

// runSpec is one replay.
type runSpec struct {
	Name     string `json:"name"`
	Trace    string `json:"trace"` // "mooncake" or "azure"
	Balancer string `json:"balancer"`
	Gateways int    `json:"gateways"`
	Share    bool   `json:"share_index"`
}

// row is one replay's outcome.
type row struct {
	runSpec
	Sent             int64            `json:"sent"`
	OK               int64            `json:"ok"`
	Failed           int64            `json:"failed"`
	CachedTokenRatio float64          `json:"cached_token_ratio"`
	HitVsBound       float64          `json:"hit_ratio_vs_bound"`
	TTFTP50MS        float64          `json:"ttft_p50_ms"`
	TTFTP99MS        float64          `json:"ttft_p99_ms"`
	ITLP50MS         float64          `json:"itl_p50_ms"`
	LatencyP99MS     float64          `json:"latency_p99_ms"`
	GoodRatio        float64          `json:"good_ratio"`
	MaxMeanLoad      float64          `json:"max_mean_load"`
	Replicas         map[string]int64 `json:"replicas"`
	Error            string           `json:"error,omitempty"`
}

// report is what the run writes as JSON.
type report struct {
	Command    string    `json:"command"`
	Start      time.Time `json:"start"`
	Host       string    `json:"host"`
	Load       string    `json:"load_average_at_start"`
	Replicas   int       `json:"replicas"`
	KVBlocks   int       `json:"kv_blocks"`
	BlockTok   int       `json:"block_tokens"`
	Prefill    string    `json:"prefill_per_token"`
	ITL        string    `json:"itl"`
	MaxRunning int       `json:"max_running"`
	TokenScale float64   `json:"token_scale"`
	TimeScale  float64   `json:"time_scale"`
	Window     string    `json:"mooncake_window"`
	AzWindow   string    `json:"control_window"`
	Requests   int       `json:"mooncake_requests"`
	AzRequests int       `json:"control_requests"`
	Bound      float64   `json:"token_reuse_bound"`
	BlockBound float64   `json:"block_reuse_bound"`
	SLO        string    `json:"slo"`
	Rows       []*row    `json:"rows"`
}

func run(ctx context.Context, args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if o.render != "" {
		b, err := os.ReadFile(filepath.Join(o.render, "kvroute.json"))
		if err != nil {
			return err
		}
		rep := &report{}
		if err := json.Unmarshal(b, rep); err != nil {
			return err
		}
		return write(o.out, rep)
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "sluice-bench-kvroute-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	sup := &procs.Supervisor{LogDir: scratch, Grace: 3 * time.Second}
	defer sup.StopAll()

	bin := filepath.Join(root, "bench", ".bin", "sluice")
	logf("building sluice")
	if out, err := procs.Run(ctx, root, "go", "build", "-o", bin, "./cmd/sluice"); err != nil {
		return fmt.Errorf("build sluice: %w\n%s", err, out)
	}
	moon, err := bench.LoadTrace(o.mooncake, bench.TraceOptions{TokenScale: o.tokenScale, Window: o.window})
	if err != nil {
		return err
	}
	rep := &report{
		Command: strings.TrimSpace("go run ./bench/kvroute " + strings.Join(args, " ")),
		Start:   time.Now().UTC(), Replicas: o.replicas, KVBlocks: o.kvBlocks, BlockTok: 16,
		Prefill: o.prefillPerToken.String(), ITL: o.itl.String(), MaxRunning: o.maxRunning,
		TokenScale: o.tokenScale, TimeScale: o.timeScale, Window: o.window.String(), AzWindow: o.azureWindow.String(),
		Requests: len(moon.Requests), Bound: moon.TokenReuseBound(), BlockBound: moon.BlockReuseBound(),
		SLO: fmt.Sprintf("ttft ≤ %v, mean itl ≤ %v", o.sloTTFT, o.sloITL),
	}
	rep.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.Load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	logf("mooncake: %d requests in the first %v, token reuse bound %.3f (blocks %.3f), replayed %g× faster",
		len(moon.Requests), o.window, rep.Bound, rep.BlockBound, o.timeScale)
	var specs []runSpec
	for _, b := range o.balancers {
		specs = append(specs, runSpec{Name: b, Trace: "mooncake", Balancer: b, Gateways: 1})
	}
	specs = append(specs,
		runSpec{Name: fmt.Sprintf("kv_aware, %d gateways, shared index", o.gateways), Trace: "mooncake", Balancer: "kv_aware", Gateways: o.gateways, Share: true},
		runSpec{Name: fmt.Sprintf("kv_aware, %d gateways, local indexes", o.gateways), Trace: "mooncake", Balancer: "kv_aware", Gateways: o.gateways})
	var azure *bench.Trace
	if o.azure != "" {
		azure, err = bench.LoadTrace(o.azure, bench.TraceOptions{TokenScale: o.tokenScale, Window: o.azureWindow})
		if err != nil {
			return err
		}
		rep.AzRequests = len(azure.Requests)
		specs = append(specs,
			runSpec{Name: "control: p2c_ewma", Trace: "azure", Balancer: "p2c_ewma", Gateways: 1},
			runSpec{Name: "control: kv_aware", Trace: "azure", Balancer: "kv_aware", Gateways: 1})
	}
	e := &env{o: o, sup: sup, bin: bin, dir: scratch}
	for _, sp := range specs {
		if ctx.Err() != nil {
			break
		}
		tr := moon
		if sp.Trace == "azure" {
			tr = azure
		}
		r := &row{runSpec: sp}
		rep.Rows = append(rep.Rows, r)
		if err := e.replay(ctx, tr, r); err != nil {
			r.Error = err.Error()
			logf("%s: %v", sp.Name, err)
			continue
		}
		if sp.Trace == "mooncake" && rep.Bound > 0 {
			r.HitVsBound = r.CachedTokenRatio / rep.Bound
		}
		logf("%s: ok %d/%d, cached %.3f (%.2f× bound), TTFT p50 %.0f ms p99 %.0f ms, good %.3f, max/mean load %.2f",
			sp.Name, r.OK, r.Sent, r.CachedTokenRatio, r.HitVsBound, r.TTFTP50MS, r.TTFTP99MS, r.GoodRatio, r.MaxMeanLoad)
	}
	if err := write(o.out, rep); err != nil {
		return err
	}
	return ctx.Err()
}

// write writes rep to dir as kvroute.json, kvroute.md and kvroute.png.
func write(dir string, rep *report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "kvroute.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "kvroute.md"), []byte(markdown(rep)), 0o644); err != nil {
		return err
	}
	if err := chart(rep, filepath.Join(dir, "kvroute.png")); err != nil {
		return err
	}
	fmt.Print(markdown(rep))
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}
