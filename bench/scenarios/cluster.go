package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// simModel is the model every simulated replica serves.
const simModel = "sim-llm"

// env is what every scenario runs in: the sluice binary, a scratch
// directory for configs and logs, and the owner of the child processes.
type env struct {
	bin     string
	scratch string
	procs   *procs.Supervisor
	logf    func(format string, args ...any)
}

// sim is a running `sluice sim`.
type sim struct {
	*procs.Proc
	addr string
}

// startSims starts n sims named prefix0, prefix1, ... with the given extra
// flags and waits until each answers /health.
func (e *env) startSims(ctx context.Context, prefix string, n int, flags []string) ([]*sim, error) {
	var sims []*sim
	for i := range n {
		addr, err := procs.FreeAddr()
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("%s%d", prefix, i)
		argv := append([]string{e.bin, "sim", "--addr", addr, "--id", id, "--model", simModel}, flags...)
		p, err := e.procs.Start(id, nil, argv...)
		if err != nil {
			return nil, err
		}
		sims = append(sims, &sim{Proc: p, addr: addr})
	}
	for _, s := range sims {
		if err := procs.WaitReady(ctx, s.Proc, 15*time.Second, procs.HTTPOK("http://"+s.addr+"/health")); err != nil {
			return nil, err
		}
	}
	return sims, nil
}

// backendsYAML lists sims as a pool's static backends.
func backendsYAML(sims []*sim) string {
	var b strings.Builder
	b.WriteString("    backends:\n")
	for _, s := range sims {
		fmt.Fprintf(&b, "      - {url: \"http://%s\"}\n", s.addr)
	}
	return b.String()
}

// gateway is a running `sluice serve`.
type gateway struct {
	*procs.Proc
	url, admin string
}

// startGateway writes a config with one pool named "chat" serving simModel,
// whose keys (indented by four spaces) are poolYAML, runs `sluice serve` on
// it and waits until the admin server is ready.
func (e *env) startGateway(ctx context.Context, name, poolYAML string) (*gateway, error) {
	listen, err := procs.FreeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := procs.FreeAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(e.scratch, name+"-")
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", name, err)
	}
	cfg := fmt.Sprintf(`listen: %q
admin: {listen: %q}
data_dir: %q
log: {level: warn}
pools:
  - name: chat
    models: [%s]
%s`, listen, admin, filepath.Join(dir, "data"), simModel, poolYAML)
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("gateway %s: %w", name, err)
	}
	p, err := e.procs.Start(name, nil, e.bin, "serve", "-c", path)
	if err != nil {
		return nil, err
	}
	g := &gateway{Proc: p, url: "http://" + listen, admin: "http://" + admin}
	if err := procs.WaitReady(ctx, p, 20*time.Second, procs.HTTPOK(g.admin+"/readyz")); err != nil {
		return nil, err
	}
	return g, nil
}

// waitPool waits until the pool has at least ready ready backends and an
// empty queue.
func (g *gateway) waitPool(ctx context.Context, ready int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := g.pool(ctx)
		if err == nil && st.Replicas.Ready >= ready && st.QueueDepth == 0 {
			return nil
		}
		if done, perr := g.Exited(); done {
			return fmt.Errorf("%s exited (%v):\n%s", g.Name, perr, g.LogTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: pool not at %d ready replicas after %v (last %+v, %v)", g.Name, ready, timeout, st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// poolStatus is the part of a pool in GET /api/pools the scenarios read.
type poolStatus struct {
	InFlight   int64 `json:"in_flight"`
	QueueDepth int   `json:"queue_depth"`
	Replicas   struct {
		Desired int `json:"desired"`
		Ready   int `json:"ready"`
	} `json:"replicas"`
	Process *struct {
		Desired  int `json:"desired"`
		Starting int `json:"starting"`
		Ready    int `json:"ready"`
		Draining int `json:"draining"`
		Backoff  int `json:"backoff"`
	} `json:"process"`
	Backends []struct {
		URL   string `json:"url"`
		State string `json:"state"`
	} `json:"backends"`
}

// pool reads the gateway's only pool from /api/pools.
func (g *gateway) pool(ctx context.Context) (poolStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.admin+"/api/pools", nil)
	if err != nil {
		return poolStatus{}, err
	}
	resp, err := procs.ProbeClient.Do(req)
	if err != nil {
		return poolStatus{}, fmt.Errorf("GET /api/pools: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Pools []poolStatus `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return poolStatus{}, fmt.Errorf("GET /api/pools: %w", err)
	}
	if len(out.Pools) != 1 {
		return poolStatus{}, fmt.Errorf("GET /api/pools: %d pools, want 1", len(out.Pools))
	}
	return out.Pools[0], nil
}

// counter sums the samples of a Prometheus counter family on the gateway's
// /metrics whose labels include pool="chat" (the scenarios' only pool).
func (g *gateway) counter(ctx context.Context, family string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := procs.ProbeClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	return sumCounter(string(b), family), nil
}

// sumCounter sums the values of family's samples labeled pool="chat" in a
// Prometheus text exposition.
func sumCounter(text, family string) float64 {
	var total float64
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, family+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, `pool="chat"`) {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			total += v
		}
	}
	return total
}

// sample is one poll of a gateway: its pool's state and its memory.
type sample struct {
	// At is the offset from the sampler's start.
	At         time.Duration `json:"-"`
	InFlight   int64         `json:"in_flight"`
	QueueDepth int           `json:"queue_depth"`
	// Ready counts ready backends; Alive adds replicas starting and
	// draining (process pools), which cost a machine as much.
	Ready   int `json:"ready"`
	Alive   int `json:"alive"`
	Desired int `json:"desired"`
	// RSSKiB is the gateway's resident set.
	RSSKiB int64 `json:"rss_kib"`
}

// MarshalJSON writes At in milliseconds.
func (s sample) MarshalJSON() ([]byte, error) {
	type plain sample
	return json.Marshal(struct {
		plain
		At int64 `json:"at_ms"`
	}{plain(s), s.At.Milliseconds()})
}

// sampler polls a gateway on a fixed period until stopped.
type sampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples []sample
	errs    int
}

// startSampler polls g every period, offsets counted from t0, until stop.
func startSampler(ctx context.Context, g *gateway, t0 time.Time, period time.Duration) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel}
	s.wg.Go(func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			s.poll(ctx, g, t0)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return s
}

func (s *sampler) poll(ctx context.Context, g *gateway, t0 time.Time) {
	at := time.Since(t0)
	st, err := g.pool(ctx)
	rss, _, rerr := procs.RSSKiB(g.Pid())
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || rerr != nil {
		if ctx.Err() == nil {
			s.errs++
		}
		return
	}
	smp := sample{At: at, InFlight: st.InFlight, QueueDepth: st.QueueDepth, Ready: st.Replicas.Ready, Alive: st.Replicas.Ready, Desired: st.Replicas.Desired, RSSKiB: rss}
	if p := st.Process; p != nil {
		smp.Ready = p.Ready
		smp.Alive = p.Ready + p.Starting + p.Draining
		smp.Desired = p.Desired
	}
	s.samples = append(s.samples, smp)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *sample) UnmarshalJSON(b []byte) error {
	type plain sample
	var v struct {
		plain
		At int64 `json:"at_ms"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = sample(v.plain)
	s.At = time.Duration(v.At) * time.Millisecond
	return nil
}

// stop ends the polling and returns the samples, in time order.
func (s *sampler) stop() []sample {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}
