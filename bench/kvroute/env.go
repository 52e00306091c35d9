package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
	"github.com/sluice-ai/sluice/internal/bench"
)

// env starts what one replay needs: fresh replicas (empty caches), a Redis
// when gateways share their index, and the gateways.
type env struct {
	o   *options
	sup *procs.Supervisor
	bin string
	dir string
	n   int // replays so far, to name files
}

var gatewayConfig = template.Must(template.New("sluice").Parse(`listen: "{{.Listen}}"
admin: {listen: ""}
data_dir: "{{.Dir}}"
log: {level: warn}
{{- if .Redis}}
redis: {url: "{{.Redis}}"}
{{- end}}
pools:
  - name: llm
    models: ["sim-llm"]
    balancer: {{.Balancer}}
    hash_on: "header:X-Session-ID"
{{- if .Session}}
    scorers: {session: 1}
{{- end}}
    kv_aware: {share: {{.Share}}, scrape_interval: 500ms}
    backends:
{{- range .Backends}}
      - {url: "http://{{.}}"}
{{- end}}
    health_check: {path: /health, interval: 1s, timeout: 500ms}
`))

// replay runs trace tr through a fresh setup for r and fills r.
func (e *env) replay(ctx context.Context, tr *bench.Trace, r *row) error {
	e.n++
	o := e.o
	var started []*procs.Proc
	defer func() { e.sup.StopAndForget(started...) }()

	sims := make([]string, o.replicas)
	for i := range sims {
		addr, err := procs.FreeAddr()
		if err != nil {
			return err
		}
		sims[i] = addr
		p, err := e.sup.Start(fmt.Sprintf("run%d-sim%d", e.n, i), nil, e.bin, "sim", "--addr", addr, "--id", "r"+strconv.Itoa(i),
			"--model", "sim-llm", "--kv-blocks", strconv.Itoa(o.kvBlocks), "--prefill-per-token", o.prefillPerToken.String(),
			"--itl", o.itl.String(), "--max-running", strconv.Itoa(o.maxRunning), "--max-body", "16MiB")
		if err != nil {
			return err
		}
		started = append(started, p)
		if err := procs.WaitReady(ctx, p, 20*time.Second, procs.HTTPOK("http://"+addr+"/health")); err != nil {
			return err
		}
	}
	redisURL := ""
	if r.Share {
		addr, err := procs.FreeAddr()
		if err != nil {
			return err
		}
		_, port, _ := strings.Cut(addr, ":")
		p, err := e.sup.Start(fmt.Sprintf("run%d-redis", e.n), nil, "redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no")
		if err != nil {
			return err
		}
		started = append(started, p)
		if err := procs.WaitReady(ctx, p, 10*time.Second, redisUp(addr)); err != nil {
			return err
		}
		redisURL = "redis://" + addr + "/0"
	}
	var urls []string
	for g := range r.Gateways {
		addr, err := procs.FreeAddr()
		if err != nil {
			return err
		}
		dir := filepath.Join(e.dir, fmt.Sprintf("run%d-gw%d", e.n, g))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cfg := filepath.Join(dir, "sluice.yaml")
		f, err := os.Create(cfg)
		if err != nil {
			return err
		}
		// "kv_aware+session" is kv_aware with the session scorer on.
		balancer, session := strings.CutSuffix(r.Balancer, "+session")
		err = gatewayConfig.Execute(f, map[string]any{"Listen": addr, "Dir": dir, "Redis": redisURL, "Balancer": balancer, "Session": session, "Share": r.Share, "Backends": sims})
		f.Close()
		if err != nil {
			return err
		}
		p, err := e.sup.Start(fmt.Sprintf("run%d-gateway%d", e.n, g), nil, e.bin, "serve", "-c", cfg)
		if err != nil {
			return err
		}
		started = append(started, p)
		if err := procs.WaitReady(ctx, p, 20*time.Second, procs.ChatOK("http://"+addr, "sim-llm")); err != nil {
			return err
		}
		urls = append(urls, "http://"+addr)
	}
	cfg := bench.Config{
		URL:       urls[0],
		Model:     "sim-llm",
		Stream:    true,
		Trace:     tr,
		TimeScale: o.timeScale,
		Timeout:   60 * time.Second,
		Seed:      42,
		Goodput:   bench.SLO{TTFT: o.sloTTFT, ITL: o.sloITL},
	}
	if len(urls) > 1 {
		sp, err := bench.NewSpread(urls...)
		if err != nil {
			return err
		}
		cfg.Transport = sp
	}
	logf("%s: %d requests over %v", r.Name, len(tr.Requests), time.Duration(float64(tr.Span())/o.timeScale).Round(time.Second))
	res, err := bench.Run(ctx, cfg, nil)
	if err != nil {
		return err
	}
	r.Sent, r.OK, r.Failed = res.Sent, res.OK, res.Failed
	r.CachedTokenRatio = res.CachedTokenRatio
	r.TTFTP50MS, r.TTFTP99MS = ms(res.TTFT.P50), ms(res.TTFT.P99)
	r.ITLP50MS, r.LatencyP99MS = ms(res.ITL.P50), ms(res.Latency.P99)
	r.GoodRatio = res.GoodRatio
	r.MaxMeanLoad = res.ReplicaLoad()
	r.Replicas = res.Replicas
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
