package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
	"github.com/sluice-ai/sluice/internal/bench"
)

// balanceSim are the balancing scenario's healthy replicas: vLLM-like
// continuous batching of 8 requests, a 20ms prefill plus 50µs per prompt
// token, 5ms per output token in a batch of one, stretched up to 1.44× by a
// full batch. The slow replicas are the same with --slowdown.
var balanceSim = simFlags{
	TTFT: 20 * time.Millisecond, PrefillPerToken: 50 * time.Microsecond, ITL: 5 * time.Millisecond,
	MaxRunning: 8, BatchPenalty: 0.5, Slowdown: 1,
}

// The balancing scenario's requests.
const (
	balancePromptTokens = 64
	balanceMaxTokens    = 32
)

// idleTimeout bounds the wait for the replicas to finish what a run left
// them (requests the client gave up on) before the next run.
const idleTimeout = 30 * time.Second

// serviceTime is how long one request of prompt and out tokens takes on a
// replica with f whose batch is full: the prefill, then out−1 further
// tokens at the full-batch pace.
func serviceTime(f simFlags, prompt, out int) time.Duration {
	fill := float64(f.MaxRunning-1) / float64(f.MaxRunning)
	prefill := float64(f.TTFT) + float64(prompt)*float64(f.PrefillPerToken)
	decode := float64(out-1) * float64(f.ITL) * (1 + f.BatchPenalty*fill)
	return time.Duration((prefill + decode) * f.Slowdown)
}

// capacity is the request rate one replica with f sustains: a full batch
// of MaxRunning requests, each taking serviceTime. Beyond it the replica's
// queue grows without bound.
func capacity(f simFlags, prompt, out int) float64 {
	return float64(f.MaxRunning) / serviceTime(f, prompt, out).Seconds()
}

// balancingResult is the balancing scenario: the same open-loop load
// through every balancing policy, over replicas of which some are slow.
type balancingResult struct {
	Replicas        int             `json:"replicas"`
	Slow            int             `json:"slow_replicas"`
	Sim             simFlags        `json:"sim"`
	SlowSim         simFlags        `json:"slow_sim"`
	PromptTokens    int             `json:"prompt_tokens"`
	MaxTokens       int             `json:"max_tokens"`
	Stream          bool            `json:"stream"`
	ServiceMS       float64         `json:"full_batch_service_ms"`
	ReplicaCapacity float64         `json:"replica_capacity_rps"`
	HealthyCapacity float64         `json:"healthy_capacity_rps"`
	SlowCapacity    float64         `json:"slow_replica_capacity_rps"`
	Load            float64         `json:"load_fraction"`
	Rate            float64         `json:"rate_rps"`
	Duration        string          `json:"duration"`
	Warmup          string          `json:"warmup"`
	Timeout         string          `json:"timeout"`
	Rows            []*balancingRow `json:"rows"`
	Error           string          `json:"error,omitempty"`
}

// balancingRow is one balancer's run.
type balancingRow struct {
	Proxy  string `json:"proxy"`
	Policy string `json:"policy"`
	// Oracle marks the reference run over the healthy replicas only.
	Oracle bool `json:"oracle"`
	// Stream is whether the requests were streamed.
	Stream bool   `json:"stream"`
	Error  string `json:"error,omitempty"`

	Sent     int64            `json:"sent"`
	OK       int64            `json:"ok"`
	Failed   int64            `json:"failed"`
	Dropped  int64            `json:"dropped"`
	Failures map[string]int64 `json:"failures"`
	Latency  dist             `json:"latency"`
	TTFT     dist             `json:"ttft"`
	// P99All is the p99 latency with every failed request counted as
	// infinitely slow (null in JSON when more than 1% failed).
	P99All jsonFloat `json:"p99_with_failures_ms"`
	// P99Ratio is P99All over the oracle's (null when infinite).
	P99Ratio jsonFloat `json:"p99_ratio_to_oracle"`
	// Completed is how many requests each replica finished during the run
	// (warmup included), slow replicas last; SlowShare is the slow ones'
	// fraction of the total.
	Completed []int64 `json:"completed_by_replica"`
	SlowShare float64 `json:"slow_share"`
}

// Label names the row in tables and charts; rows in the other streaming
// mode than the scenario's are marked.
func (r *balancingRow) Label(stream bool) string {
	l := r.Proxy + " " + r.Policy
	if r.Oracle {
		l = "oracle (healthy only)"
	}
	if r.Stream != stream {
		if r.Stream {
			l += ", streamed"
		} else {
			l += ", not streamed"
		}
	}
	return l
}

// balancing runs the balancing scenario: replicas once, then a proxy per
// policy in turn, each under the same load.
func (s *suite) balancing(ctx context.Context) *balancingResult {
	o := s.opts
	slowSim := balanceSim
	slowSim.Slowdown = o.balSlowdown
	res := &balancingResult{
		Replicas: o.balReplicas, Slow: o.balSlow, Sim: balanceSim, SlowSim: slowSim,
		PromptTokens: balancePromptTokens, MaxTokens: balanceMaxTokens, Stream: o.balStream,
		ServiceMS:       ms(serviceTime(balanceSim, balancePromptTokens, balanceMaxTokens)),
		ReplicaCapacity: capacity(balanceSim, balancePromptTokens, balanceMaxTokens),
		SlowCapacity:    capacity(slowSim, balancePromptTokens, balanceMaxTokens),
		Load:            o.balLoad,
		Duration:        o.balDuration.String(), Warmup: o.balWarmup.String(), Timeout: o.balTimeout.String(),
	}
	healthy := o.balReplicas - o.balSlow
	res.HealthyCapacity = float64(healthy) * res.ReplicaCapacity
	res.Rate = math.Round(o.balLoad*res.HealthyCapacity*10) / 10

	var sims []*instance
	defer func() {
		for _, in := range sims {
			in.stop(s)
		}
	}()
	for i := range o.balReplicas {
		f, id := balanceSim, fmt.Sprintf("r%d", i)
		if i >= healthy {
			f, id = slowSim, id+"-slow"
		}
		in, err := s.startSim(ctx, id, f)
		if err != nil {
			res.Error = s.scenarioFailed(ctx, "balancing", err)
			return res
		}
		sims = append(sims, in)
	}
	hosts := make([]string, len(sims))
	for i, in := range sims {
		hosts[i] = in.host()
	}
	s.logf("balancing: %d replicas (%d slow ×%g), %.1f req/s each at full batch, offering %.1f req/s (%.0f%% of the healthy %.1f)",
		len(sims), o.balSlow, o.balSlowdown, res.ReplicaCapacity, res.Rate, 100*o.balLoad, res.HealthyCapacity)

	type job struct {
		proxy    proxy
		pol      policy
		oracle   bool
		stream   bool
		backends []string
	}
	var jobs []job
	sluice := proxies[0]
	rr := sluice.Balancing[0]
	if o.proxies["sluice"] {
		jobs = append(jobs, job{sluice, rr, true, o.balStream, hosts[:healthy]})
	}
	for _, p := range s.enabledProxies() {
		for _, pol := range p.Balancing {
			if !o.quick || pol.Smoke {
				jobs = append(jobs, job{p, pol, false, o.balStream, hosts})
			}
		}
	}
	// The cross-check repeats sluice's round robin, p2c_ewma and the oracle
	// in the other streaming mode: a streamed response's headers come
	// before its tokens, a non-streamed one's after them, and a balancer
	// that learns from response times sees the difference.
	if o.balCrossCheck && o.proxies["sluice"] {
		jobs = append(jobs,
			job{sluice, rr, true, !o.balStream, hosts[:healthy]},
			job{sluice, rr, false, !o.balStream, hosts},
			job{sluice, sluice.Default, false, !o.balStream, hosts})
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		row := &balancingRow{Proxy: j.proxy.Name, Policy: j.pol.Name, Oracle: j.oracle, Stream: j.stream}
		res.Rows = append(res.Rows, row)
		if err := s.balanceRun(ctx, res, row, sims, j.proxy, j.pol, j.backends); err != nil {
			row.Error = s.scenarioFailed(ctx, "balancing "+row.Label(o.balStream), err)
		}
	}
	if ctx.Err() != nil {
		res.Error = ctx.Err().Error()
	}
	summarizeBalancing(res.Rows)
	return res
}

// balanceRun measures one policy: it waits for the replicas to be idle,
// starts the proxy, sends the load, and stops the proxy.
func (s *suite) balanceRun(ctx context.Context, res *balancingResult, row *balancingRow, sims []*instance, p proxy, pol policy, backends []string) error {
	o := s.opts
	if err := waitIdle(ctx, sims); err != nil {
		return err
	}
	in, err := s.startProxy(ctx, p, pol, backends, "warn")
	if err != nil {
		return err
	}
	defer in.stop(s)
	before, err := completedBy(ctx, sims)
	if err != nil {
		return err
	}
	s.logf("balancing: %s, %.1f req/s for %v", row.Label(res.Stream), res.Rate, o.balWarmup+o.balDuration)
	r, err := bench.Run(ctx, bench.Config{
		URL:          in.URL,
		Model:        "sim-llm",
		Rate:         res.Rate,
		Duration:     o.balDuration,
		Warmup:       o.balWarmup,
		Timeout:      o.balTimeout,
		Stream:       row.Stream,
		PromptTokens: balancePromptTokens,
		MaxTokens:    balanceMaxTokens,
		Seed:         42,
	}, nil)
	if err != nil {
		return err
	}
	after, err := completedBy(ctx, sims)
	if err != nil {
		return err
	}
	row.Sent, row.OK, row.Failed, row.Dropped = r.Sent, r.OK, r.Failed, r.Dropped
	row.Failures = map[string]int64{}
	for code, n := range r.FailedByStatus {
		row.Failures["HTTP "+strconv.Itoa(code)] = n
	}
	for kind, n := range r.FailedByKind {
		row.Failures[kind] = n
	}
	row.Latency, row.TTFT = distOf(r.Latency), distOf(r.TTFT)
	row.P99All = jsonFloat(p99WithFailures(r))
	var total, slow int64
	healthy := len(sims) - o.balSlow
	for i := range sims {
		n := after[i] - before[i]
		row.Completed = append(row.Completed, n)
		total += n
		if i >= healthy {
			slow += n
		}
	}
	if total > 0 {
		row.SlowShare = float64(slow) / float64(total)
	}
	return nil
}

// summarizeBalancing fills each row's p99 ratio to the oracle's of the
// same streaming mode.
func summarizeBalancing(rows []*balancingRow) {
	oracle := map[bool]float64{}
	for _, r := range rows {
		if r.Oracle && r.Error == "" {
			oracle[r.Stream] = float64(r.P99All)
		}
	}
	for _, r := range rows {
		r.P99Ratio = jsonFloat(math.Inf(1))
		if o := oracle[r.Stream]; r.Error == "" && o > 0 && !math.IsInf(o, 0) {
			r.P99Ratio = jsonFloat(float64(r.P99All) / o)
		}
	}
}

// row finds the run of proxy's policy in the scenario's streaming mode
// (stream) or the other, or the oracle's when proxy is "oracle".
func (r *balancingResult) row(proxy, policy string, stream bool) *balancingRow {
	if r == nil {
		return nil
	}
	for _, row := range r.Rows {
		if row.Stream != stream {
			continue
		}
		if proxy == "oracle" && row.Oracle || !row.Oracle && row.Proxy == proxy && row.Policy == policy {
			return row
		}
	}
	return nil
}

// waitIdle waits until no replica has a request running or waiting.
func waitIdle(ctx context.Context, sims []*instance) error {
	deadline := time.Now().Add(idleTimeout)
	for {
		busy := 0.0
		for _, in := range sims {
			m, err := scrape(ctx, in.URL)
			if err != nil {
				return err
			}
			busy += m["vllm:num_requests_running"] + m["vllm:num_requests_waiting"]
		}
		if busy == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replicas still have %.0f requests after %v", busy, idleTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// completedBy returns each replica's count of finished requests.
func completedBy(ctx context.Context, sims []*instance) ([]int64, error) {
	out := make([]int64, len(sims))
	for i, in := range sims {
		m, err := scrape(ctx, in.URL)
		if err != nil {
			return nil, err
		}
		out[i] = int64(m["vllm:request_success_total"])
	}
	return out, nil
}

// scrape reads a replica's /metrics, summing each metric over its labels.
func scrape(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := procs.ProbeClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", base, resp.StatusCode)
	}
	return parseMetrics(bufio.NewScanner(resp.Body))
}

// parseMetrics sums the samples of each metric name in Prometheus text.
func parseMetrics(sc *bufio.Scanner) (map[string]float64, error) {
	m := map[string]float64{}
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		// The value is the last field unless a timestamp follows it; the
		// sim writes none.
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		m[name] += v
	}
	return m, sc.Err()
}
