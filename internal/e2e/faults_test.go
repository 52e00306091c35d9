package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const poolHeader = `listen: LISTEN
admin: {listen: ADMIN}
log: {level: warn}
pools:
  - name: chat
    models: [sim-llm]
    balancer: p2c_ewma
`

// TestKillReplicaUnderLoad kills one of four replicas with kill -9 while
// traffic flows. Requests in flight on it and new ones that hit its dead
// port are retried elsewhere: non-streamed requests never fail, and the
// only streamed ones that may fail are those that had already sent bytes
// from it — and those end with an explicit error event, never a silent cut.
func TestKillReplicaUnderLoad(t *testing.T) {
	sims := []*proc{}
	for i := range 4 {
		sims = append(sims, startSim(t, fmt.Sprint("r", i), "--ttft", "5ms", "--itl", "2ms"))
	}
	g := startGateway(t, poolHeader+`    health_check: {path: /health, interval: 200ms, timeout: 150ms, unhealthy_threshold: 2}
    backends:
`+backendsYAML(sims...))

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var (
		mu             sync.Mutex
		ok, streamErrs int
		failures       []string
	)
	var wg sync.WaitGroup
	for w := range 8 {
		stream := w%2 == 1
		wg.Go(func() {
			for ctx.Err() == nil {
				status, body, err := chat(context.Background(), client, g.url, 20, stream)
				mu.Lock()
				switch {
				case err == nil && status == 200 && !strings.Contains(body, `"error"`):
					ok++
				case stream && err == nil && status == 200 && strings.Contains(body, `data: {"error":`):
					streamErrs++ // had streamed from the killed replica
				default:
					failures = append(failures, fmt.Sprintf("stream=%v status=%d err=%v body=%.200s", stream, status, err, body))
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	sims[2].signal(syscall.SIGKILL)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d client-visible failures (ok %d), e.g. %s", len(failures), ok, failures[0])
	}
	if ok < 50 {
		t.Fatalf("only %d requests completed", ok)
	}
	t.Logf("ok %d, streams ended by an error event %d", ok, streamErrs)
	for _, b := range g.pools(t)[0].Backends {
		if strings.HasSuffix(b.URL, sims[2].addr) && b.State == "healthy" {
			t.Errorf("killed replica still healthy: %+v", b)
		}
	}
}

// TestHungReplicaIsFailedOverAndEjected freezes a replica (SIGSTOP): it
// still accepts connections but never answers. Requests sent to it fail
// over after timeouts.first_byte, and outlier detection ejects it.
func TestHungReplicaIsFailedOverAndEjected(t *testing.T) {
	a := startSim(t, "a", "--ttft", "1ms", "--itl", "1ms")
	b := startSim(t, "b", "--ttft", "1ms", "--itl", "1ms")
	g := startGateway(t, poolHeader+`    health_check: {path: ""}
    timeouts: {first_byte: 300ms}
    outlier_detection: {consecutive_failures: 2, ejection_time: 1m}
    backends:
`+backendsYAML(a, b))
	b.signal(syscall.SIGSTOP)
	for i := range 20 {
		status, body, err := chat(context.Background(), client, g.url, 4, false)
		if err != nil || status != 200 {
			t.Fatalf("request %d: %d %v %s", i, status, err, body)
		}
	}
	var hung string
	for _, be := range g.pools(t)[0].Backends {
		if strings.HasSuffix(be.URL, b.addr) {
			hung = be.State + "/" + be.Breaker
		}
	}
	if hung != "ejected/open" {
		t.Fatalf("hung replica is %s, want ejected/open", hung)
	}
}

// TestStalledStreamEndsWithErrorEvent freezes a replica mid-stream: the
// client gets an error event once timeouts.stream_idle passes, not a stream
// that silently stops.
func TestStalledStreamEndsWithErrorEvent(t *testing.T) {
	s := startSim(t, "s", "--ttft", "1ms", "--itl", "20ms")
	g := startGateway(t, poolHeader+`    health_check: {path: ""}
    timeouts: {stream_idle: 400ms}
    backends:
`+backendsYAML(s))
	req, _ := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(`{"model":"sim-llm","messages":[{"role":"user","content":"go"}],"max_tokens":500,"stream":true}`))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first event %q %v", line, err)
	}
	s.signal(syscall.SIGSTOP)
	var last string
	for {
		line, err := rd.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			last = line
		}
		if err != nil {
			break
		}
	}
	if !strings.Contains(last, `"error"`) || !strings.Contains(last, "stream_idle") {
		t.Fatalf("stream ended with %q, want an error event naming stream_idle", last)
	}
}

// TestOverloadBurst offers 3× what a pool can run plus queue at once:
// admitted requests all succeed, the rest are refused fast with 503 and
// Retry-After, and neither the queue nor a backend ever holds more than its
// bound.
func TestOverloadBurst(t *testing.T) {
	a := startSim(t, "a", "--ttft", "20ms", "--itl", "5ms", "--max-running", "4")
	b := startSim(t, "b", "--ttft", "20ms", "--itl", "5ms", "--max-running", "4")
	const (
		perBackend = 4
		queueSize  = 8
		capacity   = 2*perBackend + queueSize // running plus waiting
	)
	g := startGateway(t, poolHeader+fmt.Sprintf(`    health_check: {path: ""}
    max_concurrency: %d
    queue: {size: %d, timeout: 10s}
    backends:
`, perBackend, queueSize)+backendsYAML(a, b))

	var maxQueue, maxInFlight atomic.Int64
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			for _, p := range g.pools(t) {
				if q := int64(p.QueueDepth); q > maxQueue.Load() {
					maxQueue.Store(q)
				}
				for _, be := range p.Backends {
					if f := int64(be.InFlight); f > maxInFlight.Load() {
						maxInFlight.Store(f)
					}
				}
			}
		}
	}()

	const burst = 3 * capacity
	type outcome struct {
		status     int
		retryAfter string
		body       string
		err        error
	}
	results := make([]outcome, burst)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	for i := range burst {
		wg.Go(func() {
			<-startGate
			req, _ := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(`{"model":"sim-llm","messages":[{"role":"user","content":"hi"}],"max_tokens":40}`))
			resp, err := client.Do(req)
			if err != nil {
				results[i] = outcome{err: err}
				return
			}
			var sb strings.Builder
			_, err = bufio.NewReader(resp.Body).WriteTo(&sb)
			resp.Body.Close()
			results[i] = outcome{resp.StatusCode, resp.Header.Get("Retry-After"), sb.String(), err}
		})
	}
	close(startGate)
	wg.Wait()
	close(stopWatch)
	<-watched

	var ok, rejected int
	for _, r := range results {
		switch {
		case r.err == nil && r.status == 200:
			ok++
		case r.err == nil && r.status == 503 && r.retryAfter != "" && strings.Contains(r.body, "queue_full"):
			rejected++
		default:
			t.Errorf("unexpected outcome %+v", r)
		}
	}
	if ok < capacity || ok+rejected != burst {
		t.Errorf("ok %d rejected %d of %d; want at least %d admitted and the rest refused", ok, rejected, burst, capacity)
	}
	if maxQueue.Load() > queueSize {
		t.Errorf("queue reached %d > size %d", maxQueue.Load(), queueSize)
	}
	if maxInFlight.Load() > perBackend {
		t.Errorf("a backend had %d in flight > max_concurrency %d", maxInFlight.Load(), perBackend)
	}
	t.Logf("burst %d: ok %d, refused %d, max queue %d, max in flight per backend %d", burst, ok, rejected, maxQueue.Load(), maxInFlight.Load())
}

// TestPriorityUnderSaturation saturates a one-slot pool with a queue mixing
// high and low priorities: high-priority requests wait less.
func TestPriorityUnderSaturation(t *testing.T) {
	s := startSim(t, "s", "--ttft", "10ms", "--itl", "1ms")
	g := startGateway(t, poolHeader+`    health_check: {path: ""}
    max_concurrency: 1
    queue: {size: 100, timeout: 60s}
    backends:
`+backendsYAML(s))
	type sample struct {
		prio string
		d    time.Duration
	}
	out := make(chan sample, 40)
	var wg sync.WaitGroup
	for i := range 40 {
		prio := "low"
		if i%2 == 0 {
			prio = "high"
		}
		wg.Go(func() {
			t0 := time.Now()
			status, body, err := chat(context.Background(), client, g.url, 2, false, "X-Sluice-Priority", prio)
			if err != nil || status != 200 {
				t.Errorf("%s: %d %v %s", prio, status, err, body)
			}
			out <- sample{prio, time.Since(t0)}
		})
	}
	wg.Wait()
	close(out)
	by := map[string][]time.Duration{}
	for s := range out {
		by[s.prio] = append(by[s.prio], s.d)
	}
	med := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	hi, lo := med(by["high"]), med(by["low"])
	t.Logf("median latency: high %v, low %v", hi, lo)
	if hi >= lo {
		t.Errorf("high priority median %v not below low priority median %v", hi, lo)
	}
}
