package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/tracing/tracingtest"
)

// TestReloadMovesToTheNewCollector swaps the collector under a span that is
// open: the span still reaches the old collector (the replaced provider
// waits for it, then flushes its queue as it shuts down), and spans started
// after the swap reach the new one.
func TestReloadMovesToTheNewCollector(t *testing.T) {
	oldRecv, newRecv := tracingtest.StartReceiver(t), tracingtest.StartReceiver(t)
	// Batches wait an hour: only a flush sends them, so the old collector
	// receiving the open span proves the old provider was flushed and shut
	// down once that span ended.
	p, err := New(context.Background(), config.Tracing{OTLPEndpoint: oldRecv.HTTPEndpoint, Protocol: "http", SampleRatio: 1}, Options{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())

	const before, after = "4bf92f3577b34da6a3ce929d0e0e4731", "4bf92f3577b34da6a3ce929d0e0e4732"
	_, open := p.Start(context.Background(), withTraceparent(before))
	old := p.cur.Load()

	if err := p.Apply(context.Background(), config.Tracing{OTLPEndpoint: newRecv.GRPCEndpoint, Protocol: "grpc", SampleRatio: 1}); err != nil {
		t.Fatal(err)
	}
	if p.cur.Load() == old || !p.Enabled() {
		t.Fatal("Apply of a new collector kept the old provider")
	}
	select {
	case <-old.idle:
		t.Fatal("the replaced provider counts no open span")
	default:
	}
	_, s := p.Start(context.Background(), withTraceparent(after))
	s.End()
	open.End()

	select {
	case <-old.idle:
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced provider did not see its last span end")
	}
	got := oldRecv.Wait(t, 20*time.Second, func(s []tracingtest.Span) bool { return len(s) >= 1 })
	if len(got) != 1 || got[0].TraceID != before {
		t.Errorf("old collector received %v, want the span opened before the reload", traceIDs(got))
	}
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got = newRecv.Wait(t, 20*time.Second, func(s []tracingtest.Span) bool { return len(s) >= 1 })
	if len(got) != 1 || got[0].TraceID != after {
		t.Errorf("new collector received %v, want the span started after the reload", traceIDs(got))
	}
}

// TestReloadOnAndOff turns tracing off and on again by reload, keeps the
// provider when the config did not change, and leaves the config in force
// when the new one is bad.
func TestReloadOnAndOff(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	on := config.Tracing{OTLPEndpoint: recv.HTTPEndpoint, Protocol: "http", SampleRatio: 1, Headers: map[string]string{"X-Token": "a"}}
	p, err := New(context.Background(), config.Tracing{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if p.Enabled() {
		t.Fatal("enabled without an endpoint")
	}

	if err := p.Apply(context.Background(), on); err != nil {
		t.Fatal(err)
	}
	if !p.Enabled() {
		t.Fatal("not enabled after a reload set an endpoint")
	}
	g := p.cur.Load()
	same := on
	same.Headers = map[string]string{"X-Token": "a"}
	if err := p.Apply(context.Background(), same); err != nil || p.cur.Load() != g {
		t.Errorf("an unchanged config rebuilt the provider (%v)", err)
	}

	for _, bad := range []struct {
		cfg  config.Tracing
		want string
	}{
		{config.Tracing{OTLPEndpoint: "collector:4318"}, "want http://host:port"},
		{config.Tracing{OTLPEndpoint: recv.HTTPEndpoint, Protocol: "thrift"}, "unknown protocol"},
		{config.Tracing{OTLPEndpoint: recv.HTTPEndpoint, SampleRatio: 2}, "sample_ratio"},
	} {
		c, err := p.Prepare(context.Background(), bad.cfg)
		if err == nil || !strings.Contains(err.Error(), bad.want) || c != nil {
			t.Errorf("Prepare(%+v): %v, want an error with %q", bad.cfg, err, bad.want)
		}
		if p.cur.Load() != g {
			t.Errorf("a bad config (%+v) replaced the provider", bad.cfg)
		}
	}

	// A prepared change that is discarded leaves the provider in force.
	c, err := p.Prepare(context.Background(), config.Tracing{OTLPEndpoint: recv.GRPCEndpoint, Protocol: "grpc", SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	c.Discard()
	c.Commit() // after Discard: nothing
	if p.cur.Load() != g {
		t.Error("a discarded change replaced the provider")
	}

	if err := p.Apply(context.Background(), config.Tracing{}); err != nil {
		t.Fatal(err)
	}
	if p.Enabled() {
		t.Fatal("still enabled after a reload removed the endpoint")
	}
	if _, s := p.Start(context.Background(), withTraceparent("4bf92f3577b34da6a3ce929d0e0e4733")); s.IsRecording() || s.TraceID() != "" {
		t.Error("a span started with tracing off")
	}
}

// TestReloadUnderLoad swaps the provider back and forth between two
// configs while spans start and end on several goroutines: every sampled
// span is exported, none is dropped on a provider shut down under it.
func TestReloadUnderLoad(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	cfgs := []config.Tracing{
		{OTLPEndpoint: recv.HTTPEndpoint, Protocol: "http", SampleRatio: 1},
		{OTLPEndpoint: recv.GRPCEndpoint, Protocol: "grpc", SampleRatio: 1},
	}
	reg := prometheus.NewRegistry()
	p, err := New(context.Background(), cfgs[0], Options{Registerer: reg, QueueSize: 1 << 14, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const workers, perWorker, reloads = 4, 300, 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range workers {
		wg.Go(func() {
			<-start
			for range perWorker {
				ctx, s := p.Start(context.Background(), httptest.NewRequest("POST", "/v1/chat/completions", nil))
				_, a := p.StartAttempt(ctx, "chat", "http://127.0.0.1:9001", 1)
				a.End()
				s.End()
			}
		})
	}
	close(start)
	for i := range reloads {
		if err := p.Apply(context.Background(), cfgs[(i+1)%2]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	const want = workers * perWorker * 2
	m := p.metricsForTest()
	exported, dropped := testutil.ToFloat64(m.exported), testutil.ToFloat64(m.queueFull)+testutil.ToFloat64(m.exportFailed)+testutil.ToFloat64(m.shutdown)
	if exported != want || dropped != 0 {
		t.Errorf("exported %v and dropped %v spans, want all %d exported", exported, dropped, want)
	}
	got := recv.Wait(t, 30*time.Second, func(s []tracingtest.Span) bool { return len(s) >= want })
	if len(got) != want {
		t.Errorf("collector received %d spans, want %d", len(got), want)
	}
	if _, err := p.Prepare(context.Background(), cfgs[1]); err == nil {
		t.Error("Prepare after Shutdown succeeded")
	}
}

// TestRetireTimeout: a replaced provider whose span never ends is shut down
// after Options.RetireTimeout, and the late span is counted as dropped.
func TestRetireTimeout(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	p, err := New(context.Background(), config.Tracing{OTLPEndpoint: recv.HTTPEndpoint, Protocol: "http", SampleRatio: 1},
		Options{RetireTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	_, stuck := p.Start(context.Background(), withTraceparent("4bf92f3577b34da6a3ce929d0e0e4734"))
	if err := p.Apply(context.Background(), config.Tracing{}); err != nil {
		t.Fatal(err)
	}
	waitRetired := make(chan struct{})
	go func() { p.retiring.Wait(); close(waitRetired) }()
	select {
	case <-waitRetired:
	case <-time.After(20 * time.Second):
		t.Fatal("the replaced provider was not shut down after its retire timeout")
	}
	stuck.End()
	if n := testutil.ToFloat64(p.metricsForTest().shutdown); n != 1 {
		t.Errorf("dropped (shutdown) %v, want the span that ended after its provider shut down", n)
	}
}

// withTraceparent is a request continuing a client's sampled trace.
func withTraceparent(traceID string) *http.Request {
	r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	r.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	return r
}

func traceIDs(spans []tracingtest.Span) []string {
	out := make([]string, 0, len(spans))
	for _, s := range spans {
		out = append(out, s.TraceID)
	}
	return out
}
