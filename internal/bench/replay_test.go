package bench

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/sim"
)

// startSims starts n real sims with small latencies and a prefix cache of
// ample size, and a round-robin proxy in front of them that records the
// session header of every request.
func startSims(t *testing.T, n int) (url string, sessions *sessionLog) {
	t.Helper()
	var sims []http.Handler
	for i := range n {
		cfg := sim.DefaultConfig()
		cfg.ID = "sim-" + string(rune('a'+i))
		cfg.TTFT, cfg.ITL, cfg.PrefillPerToken = time.Millisecond, 100*time.Microsecond, time.Microsecond
		cfg.KVBlocks = 1 << 16
		s, err := sim.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		sims = append(sims, s.Handler())
	}
	// One server in front of the sims' handlers, taking them in turn and
	// noting each request's session: the sims answer in process, with no
	// second HTTP hop whose own connection handling the test would measure.
	sessions = &sessionLog{byPrompt: map[string]string{}}
	var next atomic.Uint64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sessions.add(r.Header.Get(DefaultSessionHeader))
		sims[next.Add(1)%uint64(len(sims))].ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, sessions
}

type sessionLog struct {
	mu       sync.Mutex
	seen     []string
	byPrompt map[string]string
}

func (l *sessionLog) add(s string) {
	l.mu.Lock()
	l.seen = append(l.seen, s)
	l.mu.Unlock()
}

// TestReplayMooncakeAgainstSims replays the Mooncake excerpt through two
// real sims: shared hash_ids become prefix-cache hits that the result
// reports from usage, sessions reach the server, and each replica's share
// is counted.
func TestReplayMooncakeAgainstSims(t *testing.T) {
	url, sessions := startSims(t, 2)
	tr, err := LoadTrace("testdata/mooncake-excerpt.jsonl", TraceOptions{TokenScale: 1.0 / 32})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{
		URL: url, Model: "sim-llm", Stream: true, Trace: tr, TimeScale: 2000,
		Goodput: SLO{TTFT: time.Minute, ITL: time.Minute},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res)
	if res.Sent != 13 || res.OK != 13 {
		t.Fatalf("sent %d, ok %d; want all 13 of the trace (%+v %+v)", res.Sent, res.OK, res.FailedByStatus, res.FailedByKind)
	}
	var words int64
	for i := range tr.Requests {
		words += int64(tr.PromptWords(i))
	}
	if res.PromptTokens != words {
		t.Errorf("prompt tokens %d, want the %d words of the scaled trace", res.PromptTokens, words)
	}
	// Round robin over two sims splits the hits, and the replay is too
	// fast to keep arrival order within each 3s group of the trace; but a
	// conversation's later turns (seconds apart in the trace, hundreds of
	// microseconds here) and the shared first block do hit.
	if res.CachedTokens == 0 || res.CachedTokenRatio > res.Trace.TokenReuseBound {
		t.Errorf("cached %d tokens (%.3f of prompt tokens); want some, and at most the bound %.3f",
			res.CachedTokens, res.CachedTokenRatio, res.Trace.TokenReuseBound)
	}
	if len(res.Replicas) != 2 || res.Replicas["sim-a"]+res.Replicas["sim-b"] != 13 {
		t.Errorf("replicas %v, want 13 requests over sim-a and sim-b", res.Replicas)
	}
	if res.Good != 13 || res.GoodRatio != 1 {
		t.Errorf("good %d (%.2f) under a one-minute SLO, want all", res.Good, res.GoodRatio)
	}
	if res.Trace == nil || res.Trace.Format != TraceMooncake || res.Trace.Requests != 13 || res.Mode() != "trace" {
		t.Errorf("trace info %+v, mode %s", res.Trace, res.Mode())
	}
	if res.TPOT.Count == 0 {
		t.Error("no time per output token measured")
	}
	// Every excerpt request has a second block: 13 session headers, for 8
	// conversations.
	distinct := map[string]int{}
	for _, s := range sessions.seen {
		distinct[s]++
	}
	if len(sessions.seen) != 13 || len(distinct) != 8 || distinct["mooncake-14"] != 2 || distinct["mooncake-444"] != 2 || distinct["mooncake-42"] != 3 {
		t.Errorf("sessions %v", distinct)
	}
}

// TestReplayAzureTimesAndScale replays the Azure excerpt at 20× speed
// against one sim: arrivals are scheduled at the trace's times divided by
// the time scale, prompts and outputs are scaled, and random prompts share
// nothing.
func TestReplayAzureTimesAndScale(t *testing.T) {
	var mu sync.Mutex
	var arrivals []time.Time
	url, _ := startSims(t, 1)
	target, _ := http.NewRequest(http.MethodGet, url, nil)
	rp := httputil.NewSingleHostReverseProxy(target.URL)
	rp.FlushInterval = -1
	timed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer timed.Close()
	tr, err := LoadTrace("testdata/azure-excerpt.csv", TraceOptions{TokenScale: 0.25, Limit: 12})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{URL: timed.URL, Model: "sim-llm", Trace: tr, TimeScale: 20, Goodput: SLO{E2E: time.Minute}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res)
	if res.OK != 12 || res.CachedTokens != 0 || res.Good != 12 {
		t.Errorf("ok %d, cached %d, good %d; want 12, 0, 12", res.OK, res.CachedTokens, res.Good)
	}
	var in, out int64
	for i := range tr.Requests {
		in += int64(tr.PromptWords(i))
		out += int64(tr.OutputTokens(i))
	}
	if res.PromptTokens != in || res.OutputTokens != out {
		t.Errorf("tokens %d in, %d out; want %d and %d", res.PromptTokens, res.OutputTokens, in, out)
	}
	// The schedule is the trace's times / 20; the run lasts to the last.
	want := tr.Span() / 20
	sched := newTraceSchedule(tr, 20)
	for i, q := range tr.Requests {
		if at := sched.next(); at-q.At/20 > time.Microsecond || q.At/20-at > time.Microsecond {
			t.Errorf("request %d scheduled at %v, want %v", i, at, q.At/20)
		}
	}
	if at := sched.next(); at != math.MaxInt64 {
		t.Errorf("schedule goes on past the trace: %v", at)
	}
	if len(arrivals) != 12 {
		t.Errorf("%d arrivals, want 12", len(arrivals))
	}
	if res.Config.Duration != want+time.Millisecond {
		t.Errorf("duration %v, want the scaled span %v + 1ms", res.Config.Duration, want)
	}
}

// TestSpreadOverGateways replays through a Spread over three servers: each
// gets every third request.
func TestSpreadOverGateways(t *testing.T) {
	var hits [3]atomic.Int64
	var urls []string
	for i := range hits {
		counted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			w.Header().Set(InstanceHeader, "gw"+string(rune('0'+i)))
			jsonHandler(t, 0, 2)(w, r)
		}))
		t.Cleanup(counted.Close)
		urls = append(urls, counted.URL)
	}
	spread, err := NewSpread(urls...)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	spread.Transport = tr
	res, err := Run(t.Context(), Config{URL: urls[0], Model: "m", Rate: 300, Arrivals: ArrivalsConstant,
		Duration: 100 * time.Millisecond, Transport: spread}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 30 || hits[0].Load() != 10 || hits[1].Load() != 10 || hits[2].Load() != 10 || res.ReplicaLoad() != 1 {
		t.Errorf("ok %d, hits %d %d %d, replicas %v", res.OK, hits[0].Load(), hits[1].Load(), hits[2].Load(), res.Replicas)
	}
	for _, bad := range [][]string{nil, {"127.0.0.1:80"}, {"ftp://x"}} {
		if _, err := NewSpread(bad...); err == nil {
			t.Errorf("NewSpread(%v) accepted", bad)
		}
	}
}
