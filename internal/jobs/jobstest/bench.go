package jobstest

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// benchBody is what the benchmarks' Exec answers: a small chat completion.
var benchBody = []byte(`{"id":"cmpl","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`)

// benchService runs a Service on store whose Exec answers at once; ran
// counts the attempts it answered.
func benchService(b *testing.B, store jobs.Store) (svc *jobs.Service, ran *atomic.Int64) {
	b.Helper()
	ran = new(atomic.Int64)
	exec := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(benchBody)
		ran.Add(1)
	})
	svc, err := jobs.New(context.Background(), jobs.Options{Store: store, Exec: exec, Logger: TestLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Close(ctx)
	})
	return svc, ran
}

var benchRequest = jobs.SubmitRequest{
	Tenant: "bench",
	Pool:   "chat",
	Path:   "/v1/chat/completions",
	Header: http.Header{"Content-Type": {"application/json"}},
	Body:   []byte(`{"model":"sim","messages":[{"role":"user","content":"hello"}],"max_tokens":16}`),
}

// waitSucceeded waits until the store counts n succeeded jobs. Asking the
// store for its counts is several API requests, whose CPU would be counted
// as the store's, so it first waits, on a counter in memory, for n
// attempts to have answered, and asks every 10ms only for the last
// outcomes to be recorded.
func waitSucceeded(b *testing.B, store jobs.Store, ran *atomic.Int64, n int) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for ran.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for {
		c, err := store.Counts(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if c.ByStatus[jobs.StatusSucceeded] >= int64(n) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d jobs succeeded", c.ByStatus[jobs.StatusSucceeded], n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func reportLatency(b *testing.B, lat []time.Duration, unit string) {
	slices.Sort(lat)
	at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(at(0.50), unit+"-p50-ms")
	b.ReportMetric(at(0.99), unit+"-p99-ms")
}

// BenchmarkThroughput measures jobs/s end to end: b.N jobs submitted
// through Service.Submit by 16 goroutines, run by one Service (concurrency
// 64) whose Exec answers at once, until the store counts every result
// recorded. It reports jobs/s and the submit latency.
func BenchmarkThroughput(b *testing.B, newNamespace NewNamespace) {
	store := newNamespace(b)(b, normalLease)
	svc, ran := benchService(b, store)
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	cpu0, cpuKnown := processCPU()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
				t0 := time.Now()
				if _, err := svc.Submit(ctx, benchRequest); err != nil {
					failed.Add(1)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d submissions failed", n)
	}
	waitSucceeded(b, store, ran, b.N)
	elapsed := time.Since(start)
	cpu1, _ := processCPU()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
	// CPU per job depends much less than jobs/s on what else the machine
	// runs; it counts this process only (with the embedded store, the
	// server too; an external server's CPU is not in it).
	if cpuKnown {
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-us/job")
	}
	reportLatency(b, lat, "submit")
}

// BenchmarkSubmitLatency submits b.N jobs open-loop at rate per second (a
// submission starts on schedule whether or not the previous ones
// returned, so slow ones are not hidden) while the Service runs them, and
// reports the submit latency.
func BenchmarkSubmitLatency(b *testing.B, newNamespace NewNamespace, rate int) {
	store := newNamespace(b)(b, normalLease)
	svc, ran := benchService(b, store)
	lat := make([]time.Duration, b.N)
	var failed atomic.Int64
	interval := time.Second / time.Duration(rate)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range b.N {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if _, err := svc.Submit(ctx, benchRequest); err != nil {
				failed.Add(1)
			}
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	waitSucceeded(b, store, ran, b.N)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d submissions failed", n)
	}
	reportLatency(b, lat, "submit")
}
