package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// chat returns a chat request body whose prompt is several blocks long and
// starts with prefix.
func chat(prefix string) []byte {
	return fmt.Appendf(nil, `{"model":"m","messages":[{"role":"user","content":%q}]}`, prefix+strings.Repeat(" the same long shared system prompt", 40))
}

func kvPool(t *testing.T, n int, mutate func(*config.Pool)) *Pool {
	t.Helper()
	p, _ := testPool(t, n, func(pc *config.Pool) {
		pc.Balancer = "kv_aware"
		pc.KVAware.ScrapeInterval = 0 // no replica serves /metrics here
		if mutate != nil {
			mutate(pc)
		}
	})
	return p
}

// A kv_aware pool routes a prompt back to the replica that served its
// prefix; a pool with another balancer hashes nothing.
func TestKVAwarePoolRoutesByPrompt(t *testing.T) {
	p := kvPool(t, 4, nil)
	if p.Router() == nil {
		t.Fatal("kv_aware pool has no router")
	}
	for _, conv := range []string{"conversation one", "conversation two", "conversation three"} {
		pr := p.HashPrompt(chat(conv))
		if pr == nil || len(pr.Blocks) == 0 {
			t.Fatalf("no prompt blocks for %q", conv)
		}
		var first string
		for i := range 10 {
			a, err := p.Try(context.Background(), "", pr, PriorityNormal, nil)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = a.Backend().Key()
			} else if got := a.Backend().Key(); got != first {
				t.Fatalf("%s: try %d went to %s, its prefix is on %s", conv, i, got, first)
			}
			a.Done(Outcome{Status: 200, Latency: 10 * time.Millisecond, FirstToken: 10 * time.Millisecond})
		}
		pr.Release()
	}
	st := p.KVStatus()
	if st == nil || len(st.Replicas) != 4 || st.Index.Entries == 0 {
		t.Fatalf("status = %+v, want 4 replicas and a filled index", st)
	}
	var withTTFT int
	for _, r := range st.Replicas {
		if r.TTFTSeconds > 0 {
			withTTFT++
		}
	}
	if withTTFT == 0 {
		t.Error("no replica has a first-token estimate after Done with FirstToken")
	}

	q, _ := testPool(t, 2, nil)
	if q.HashPrompt(chat("x")) != nil || q.KVStatus() != nil || q.Router() != nil {
		t.Error("round_robin pool hashes prompts or has a router")
	}
}

// Reloads keep the router (and its index) when only weights change, build a
// new one when the index changes, drop it when the balancer changes; a
// removed backend is forgotten.
func TestKVAwareRouterAcrossReloads(t *testing.T) {
	p := kvPool(t, 3, nil)
	r0 := p.Router()
	cfg := *p.Config()
	cfg.Scorers = map[string]float64{"prefix": 5}
	if err := p.Reconfigure(&cfg); err != nil {
		t.Fatal(err)
	}
	if p.Router() != r0 {
		t.Fatal("a weights change replaced the router")
	}
	if got := p.Router().Config().Weights.Prefix; got != 5 {
		t.Errorf("prefix weight = %v after reload, want 5", got)
	}
	cfg2 := cfg
	cfg2.KVAware.IndexEntries = 1000
	c, err := p.Prepare(&cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if p.Router() != r0 {
		t.Fatal("Prepare touched the live router")
	}
	c.Commit()
	r1 := p.Router()
	if r1 == r0 || r1.Status().Index.Capacity != 1000 {
		t.Fatalf("index change: router %p (was %p), capacity %d", r1, r0, r1.Status().Index.Capacity)
	}

	pr := p.HashPrompt(chat("x"))
	for range 3 {
		a, err := p.Try(context.Background(), "", pr, PriorityNormal, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Done(Outcome{Status: 200})
	}
	gone := p.Backends()[0].Key()
	p.RemoveBackend(gone)
	for _, r := range p.KVStatus().Replicas {
		if r.Key == gone {
			t.Errorf("removed backend %s still in the router's status", gone)
		}
	}

	cfg3 := cfg2
	cfg3.Balancer = "p2c_ewma"
	if err := p.Reconfigure(&cfg3); err != nil {
		t.Fatal(err)
	}
	if p.Router() != nil || p.HashPrompt(chat("x")) != nil {
		t.Error("router kept after the balancer changed")
	}
}

// Start runs the router's scraper and Close stops it: a replica's /metrics
// is read while the pool runs and no more once it is closed.
func TestKVAwarePoolRunsTheScraper(t *testing.T) {
	var scrapes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			scrapes.Add(1)
			fmt.Fprintln(w, "vllm:num_requests_waiting 2\nvllm:num_requests_running 3\nvllm:kv_cache_usage_perc 0.5")
		}
	}))
	defer srv.Close()
	pc := config.DefaultPool()
	pc.Name, pc.Models, pc.Balancer = "p", []string{"m"}, "kv_aware"
	pc.Backends = []config.Backend{{URL: srv.URL, Weight: 1}}
	pc.KVAware.ScrapeInterval = config.Duration(20 * time.Millisecond)
	pc.KVAware.ScrapeTimeout = config.Duration(time.Second)
	p, err := NewPool(&pc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Try(context.Background(), "", nil, PriorityNormal, nil) // makes the replica known
	if err != nil {
		t.Fatal(err)
	}
	a.Done(Outcome{Status: 200})
	p.Start(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := p.KVStatus()
		if len(st.Replicas) == 1 && st.Replicas[0].Load != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica never scraped: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Close()
	n := scrapes.Load()
	time.Sleep(100 * time.Millisecond)
	if got := scrapes.Load(); got != n {
		t.Errorf("%d scrapes after Close", got-n)
	}
}
