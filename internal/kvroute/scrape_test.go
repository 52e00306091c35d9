package kvroute

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// logCount counts log records by level.
type logCount struct {
	mu    sync.Mutex
	warns []string
}

func (h *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCount) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.mu.Lock()
		var replica string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "replica" {
				replica = a.Value.String()
			}
			return true
		})
		h.warns = append(h.warns, replica)
		h.mu.Unlock()
	}
	return nil
}
func (h *logCount) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCount) WithGroup(string) slog.Handler      { return h }

// TestScrapeBadReplicas scrapes real servers: one healthy vLLM, and one of
// each way a /metrics can be bad. The bad ones are scored without load,
// each logged once and counted, and none delays routing.
func TestScrapeBadReplicas(t *testing.T) {
	release := make(chan struct{})
	mux := map[string]http.HandlerFunc{
		"good": func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(vllmText)) },
		"missing": func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		},
		"slow": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		},
		"huge": func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(strings.Repeat("# padding\n", 10_000)))
			w.Write([]byte(vllmText))
		},
		"garbage":   func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("vllm:num_requests_waiting{{{ \xff\n")) },
		"unrelated": func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("process_cpu_seconds_total 3\n")) },
	}
	want := map[string]string{"missing": reasonStatus, "slow": reasonTimeout, "huge": reasonTooLarge, "garbage": reasonMalformed, "unrelated": reasonNoMetrics}
	var all []*backend
	for name, h := range mux {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		all = append(all, &backend{key: srv.URL + "/" + name})
	}
	defer close(release)
	logs := &logCount{}
	m := NewMetrics(nil)
	clk := clockwork.NewFakeClock()
	r := New(Config{Pool: "p", Scrape: ScrapeConfig{Interval: 2 * time.Second, Timeout: time.Second, MaxBytes: 64 << 10}},
		Options{Clock: clk, Metrics: m, Logger: slog.New(logs)})
	t.Cleanup(r.Close)
	r.Pick(cands(all...), Request{})
	for range 3 {
		r.ScrapeOnce(t.Context())
	}
	st := r.Status()
	for _, rs := range st.Replicas {
		name := rs.Key[strings.LastIndexByte(rs.Key, '/')+1:]
		if name == "good" {
			if rs.ScrapeError != "" || rs.Load == nil || rs.Load.Waiting != 5 || rs.Load.Running != 15 || rs.LoadStale {
				t.Errorf("good replica: %+v load %+v", rs, rs.Load)
			}
			continue
		}
		if rs.ScrapeError != want[name] || rs.Load != nil {
			t.Errorf("%s: scrape error %q, load %+v; want %q and no load", name, rs.ScrapeError, rs.Load, want[name])
		}
		if n := testutil.ToFloat64(m.ScrapeErrors.WithLabelValues("p", want[name])); n != 3 {
			t.Errorf("%s: %v %s errors counted, want 3", name, n, want[name])
		}
	}
	logs.mu.Lock()
	if len(logs.warns) != len(want) {
		t.Errorf("%d warnings logged for %d bad replicas over 3 scrapes: %v", len(logs.warns), len(want), logs.warns)
	}
	logs.mu.Unlock()

	// Routing while a scrape hangs on the slow replica takes no time:
	// picks never wait for scrapes.
	done := make(chan struct{})
	go func() {
		r.ScrapeOnce(t.Context())
		close(done)
	}()
	for range 100 {
		r.Pick(cands(all...), Request{})
	}
	<-done
	// Without every candidate scraped, the engines' view is not compared.
	for _, rs := range r.Status().Replicas {
		if rs.Last == nil || rs.Last.Queue != 0 {
			t.Errorf("%s: %+v", rs.Key, rs.Last)
		}
	}
}

func TestScrapeFeedsPick(t *testing.T) {
	body := map[string]string{
		"busy": "vllm:num_requests_waiting 12\nvllm:num_requests_running 40\nvllm:kv_cache_usage_perc 0.97\n",
		"free": "vllm:num_requests_waiting 0\nvllm:num_requests_running 8\nvllm:kv_cache_usage_perc 0.2\n",
	}
	var bs []*backend
	for _, name := range []string{"busy", "free"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(body[name])) }))
		t.Cleanup(srv.Close)
		bs = append(bs, &backend{key: srv.URL})
	}
	clk := clockwork.NewFakeClock()
	r := New(Config{Pool: "p"}, Options{Clock: clk})
	t.Cleanup(r.Close)
	p := prompt(3, 2)
	// The busy replica holds the prompt; the gateway itself sees no load
	// on either (the load comes from other clients of the engines).
	r.Pick(cands(bs[0]), Request{Blocks: p})
	r.Pick(cands(bs...), Request{})
	r.ScrapeOnce(t.Context())
	if got := r.Pick(cands(bs...), Request{Blocks: p}); got != bs[1] {
		t.Fatalf("picked %s: the holder is far over its bound", got.Key())
	}
	e := lastOf(r, bs[0].key)
	if !e.Capped || e.Outstanding != 52 || e.Queue != 12 || e.KVCache > 0.031 {
		t.Errorf("explain of the busy holder: %+v", e)
	}
	clk.Advance(4 * time.Second) // the scrape is stale: the holder is not capped
	r.Pick(cands(bs...), Request{Blocks: p})
	if e := lastOf(r, bs[0].key); e.Capped || e.Queue != 0 || e.Outstanding != 0 || e.Prefix != 1 {
		t.Errorf("explain of the holder once the scrape is stale: %+v", e)
	}
}

func TestRunCloseNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(vllmText)) }))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	clk := clockwork.NewFakeClock()
	r := New(Config{Pool: "p"}, Options{Clock: clk, HTTPClient: hc})
	r.Pick(cands(&backend{key: srv.URL}), Request{})
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background()) }()
	// The first scrape runs at once; the next after an interval.
	for i := 0; r.Status().Replicas[0].Load == nil; i++ {
		if i > 1000 {
			t.Fatal("no scrape")
		}
		time.Sleep(5 * time.Millisecond)
	}
	clk.BlockUntilContext(t.Context(), 1)
	clk.Advance(time.Second)
	r.Close()
	r.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
