package kvroute

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/balancer"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/race"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend is a replica as the pool shows it to a balancer.
type backend struct {
	key  string
	in   atomic.Int64
	cost float64
}

func (b *backend) Key() string     { return b.key }
func (b *backend) Weight() int     { return 1 }
func (b *backend) InFlight() int64 { return b.in.Load() }
func (b *backend) Cost() float64   { return b.cost }
func (b *backend) String() string  { return b.key }
func (b *backend) set(n int64) *backend {
	b.in.Store(n)
	return b
}

var _ balancer.Backend = (*backend)(nil)

func backends(n int) []*backend {
	bs := make([]*backend, n)
	for i := range bs {
		bs[i] = &backend{key: fmt.Sprintf("http://127.0.0.1:%d", 9001+i)}
	}
	return bs
}

func cands(bs ...*backend) []balancer.Backend {
	c := make([]balancer.Backend, len(bs))
	for i, b := range bs {
		c[i] = b
	}
	return c
}

func prompt(conv, turns int) []uint64 {
	var b strings.Builder
	fmt.Fprintf(&b, "system prompt of conversation %d. ", conv)
	for t := range turns {
		fmt.Fprintf(&b, "turn %d: %s", t, strings.Repeat("lorem ipsum dolor sit amet ", 20))
	}
	return HashText([]byte(b.String()), nil, 0)
}

func newTestRouter(t testing.TB, cfg Config) (*Router, *clockwork.FakeClock) {
	clk := clockwork.NewFakeClock()
	r := New(cfg, Options{Clock: clk})
	t.Cleanup(r.Close)
	return r, clk
}

func TestPickFollowsPrefix(t *testing.T) {
	r, _ := newTestRouter(t, Config{Pool: "chat"})
	bs := backends(4)
	c := cands(bs...)
	first := r.Pick(c, Request{Blocks: prompt(1, 1)})
	for turn := 2; turn <= 5; turn++ {
		if got := r.Pick(c, Request{Blocks: prompt(1, turn)}); got != first {
			t.Fatalf("turn %d went to %s, turn 1 to %s", turn, got.Key(), first.Key())
		}
	}
	st := r.Status()
	var last *Explain
	for _, rs := range st.Replicas {
		if rs.Key == first.Key() {
			last = rs.Last
		}
	}
	if last == nil || last.Matched == 0 || last.Matched >= last.Blocks || last.Prefix <= 0.5 {
		t.Errorf("explain of the holder: %+v", last)
	}
}

func TestPickCases(t *testing.T) {
	holder := prompt(7, 3)
	for _, tc := range []struct {
		name string
		// in-flight counts of replicas a, b, c; a holds holder's prefix
		// when hold is set.
		in   [3]int64
		ttft [3]float64
		hold bool
		want []string // acceptable picks
	}{
		{"the holder wins when loads are equal", [3]int64{1, 1, 1}, [3]float64{}, true, []string{"a"}},
		{"the holder wins within its bound", [3]int64{3, 2, 2}, [3]float64{}, true, []string{"a"}},
		{"the holder over its bound is skipped (hot prefix)", [3]int64{10, 1, 1}, [3]float64{}, true, []string{"b", "c"}},
		// The death spiral of routers that send misses to the replica with
		// the least cached: here c caches nothing because it is swamped.
		{"a miss goes to the least loaded, not the emptiest cache", [3]int64{2, 3, 10}, [3]float64{}, false, []string{"a"}},
		{"a miss avoids a slow idle replica", [3]int64{2, 2, 0}, [3]float64{1e6, 1e6, 8e6}, false, []string{"a", "b"}},
		{"a slow holder loses to fast idle replicas", [3]int64{0, 0, 0}, [3]float64{20e6, 1e6, 1e6}, true, []string{"b", "c"}},
		{"a slightly slower holder keeps its prefix", [3]int64{0, 0, 0}, [3]float64{1.5e6, 1e6, 1e6}, true, []string{"a"}},
		// p2c_ewma's known limit: latency × (in flight + 1) equalises, so
		// an 8× slow replica wins once the fast ones have 7 in flight.
		{"a slow replica is not picked while fast ones are busy", [3]int64{8, 8, 0}, [3]float64{1e6, 1e6, 8e6}, false, []string{"a", "b"}},
		// A replica whose requests hit its cache looks fast; the others
		// are not slow for it.
		{"one fast-looking replica does not exclude the others", [3]int64{5, 0, 0}, [3]float64{0.3e6, 1e6, 1.2e6}, false, []string{"b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRouter(t, Config{Pool: "p"})
			a, b, c := &backend{key: "a"}, &backend{key: "b"}, &backend{key: "c"}
			all := []*backend{a, b, c}
			if tc.hold {
				r.Pick(cands(a), Request{Blocks: holder})
			}
			for i, bk := range all {
				bk.set(tc.in[i])
				if tc.ttft[i] > 0 {
					r.replicaFor(bk.key, true)
					r.ObserveTTFT(bk.key, time.Duration(tc.ttft[i]), len(holder))
				}
			}
			for i := range 20 {
				p := holder
				if !tc.hold {
					p = prompt(100+i, 1) // a miss every time
				}
				got := r.Pick(cands(all...), Request{Blocks: p})
				if !slices.Contains(tc.want, got.Key()) {
					t.Fatalf("picked %s, want one of %v; status %+v", got.Key(), tc.want, r.Status().Replicas)
				}
			}
		})
	}
}

// TestHotPrefixAndConversations replays a closed loop of conversations
// that all share one system prompt: the predicted prefix-hit ratio must
// stay near the bound of one infinite cache, while no replica takes much
// more than its share.
func TestHotPrefixAndConversations(t *testing.T) {
	m := NewMetrics(nil)
	clk := clockwork.NewFakeClock()
	r := New(Config{Pool: "p"}, Options{Clock: clk, Metrics: m})
	t.Cleanup(r.Close)
	bs := backends(6)
	c := cands(bs...)
	rng := rand.New(rand.NewPCG(1, 2))
	type done struct {
		at int
		b  *backend
	}
	var running []done
	seen := map[uint64]bool{}
	prompts := map[[2]int][]uint64{}
	var total, bound int
	picks := map[string]int{}
	const steps = 2000
	for step := range steps {
		// Finish requests due now; about 48 are outstanding.
		keep := running[:0]
		for _, d := range running {
			if d.at <= step {
				d.b.in.Add(-1)
			} else {
				keep = append(keep, d)
			}
		}
		running = keep
		conv := rng.IntN(60)
		key := [2]int{conv, 1 + step/100}
		p, ok := prompts[key]
		if !ok {
			p = prompt(conv, key[1])
			prompts[key] = p
		}
		var sum int64
		for _, b := range bs {
			sum += b.InFlight()
		}
		got := r.Pick(c, Request{Blocks: p}).(*backend)
		// The bound of consistent hashing with bounded loads holds for
		// every pick: affinity never takes a replica past it, and load
		// never chooses one above the mean.
		if bound := math.Ceil(1.25 * float64(sum+1) / float64(len(bs))); float64(got.InFlight()+1) > bound {
			t.Fatalf("step %d: %s had %d in flight, bound %v", step, got.key, got.InFlight(), bound)
		}
		got.in.Add(1)
		running = append(running, done{at: step + 24 + rng.IntN(48), b: got})
		total += len(p)
		for i, h := range p {
			if !seen[h] {
				for _, h := range p[i:] {
					seen[h] = true
				}
				break
			}
			bound++
		}
		picks[got.key]++
	}
	hits := testutil.ToFloat64(m.Blocks.WithLabelValues("p", "hit"))
	mx := 0
	for _, n := range picks {
		mx = max(mx, n)
	}
	share := float64(mx) / (steps / float64(len(bs)))
	ratio := hits / float64(bound)
	t.Logf("hit ratio %.3f of blocks, bound %.3f (%.2f of the bound); max/mean picks %.2f",
		hits/float64(total), float64(bound)/float64(total), ratio, share)
	if ratio < 0.9 {
		t.Errorf("hit ratio %.2f of the single-cache bound, want >= 0.9", ratio)
	}
	if share > 1.25 {
		t.Errorf("max/mean picks %.2f, want <= 1.25", share)
	}
}

func TestSessionAffinityAgreesAcrossGateways(t *testing.T) {
	cfg := Config{Pool: "p", Weights: Weights{Session: 1, Latency: 0.01}}
	g1, _ := newTestRouter(t, cfg)
	g2, _ := newTestRouter(t, cfg)
	bs := backends(5)
	spread := map[string]int{}
	for i := range 200 {
		key := fmt.Sprintf("session-%d", i)
		p1 := g1.Pick(cands(bs...), Request{Session: key})
		rev := slices.Clone(bs)
		slices.Reverse(rev)
		p2 := g2.Pick(cands(rev...), Request{Session: key})
		if p1.Key() != p2.Key() {
			t.Fatalf("%s: gateway 1 picked %s, gateway 2 %s", key, p1.Key(), p2.Key())
		}
		spread[p1.Key()]++
		// Removing another replica does not move the session.
		others := slices.DeleteFunc(slices.Clone(bs), func(b *backend) bool { return b.key != p1.Key() && b.key == bs[i%5].key })
		if p3 := g1.Pick(cands(others...), Request{Session: key}); p3.Key() != p1.Key() {
			t.Fatalf("%s moved from %s to %s when another replica left", key, p1.Key(), p3.Key())
		}
	}
	for _, b := range bs {
		if spread[b.key] < 20 {
			t.Errorf("sessions per replica %v: uneven", spread)
			break
		}
	}
}

func TestForgetReplica(t *testing.T) {
	r, _ := newTestRouter(t, Config{Pool: "p"})
	a, b := &backend{key: "a"}, &backend{key: "b"}
	p := prompt(1, 2)
	r.Pick(cands(a), Request{Blocks: p})
	b.set(1) // a would win on load alone too: the assertions are about matched blocks
	r.Pick(cands(a, b), Request{Blocks: p})
	if m := lastOf(r, "a").Matched; m != len(p) {
		t.Fatalf("a matched %d of %d", m, len(p))
	}
	r.Forget("a") // a restarted: its cache is empty
	r.Pick(cands(b), Request{Session: "x"})
	r.Pick(cands(a, b), Request{Blocks: p[:1]})
	r.Forget("b")
	r.Pick(cands(a, b), Request{Blocks: p})
	if m := lastOf(r, "a").Matched; m != 1 {
		t.Errorf("after Forget, a matched %d blocks; want only the one recorded since", m)
	}
}

func lastOf(r *Router, key string) Explain {
	for _, rs := range r.Status().Replicas {
		if rs.Key == key && rs.Last != nil {
			return *rs.Last
		}
	}
	return Explain{}
}

func TestUnindexedRoutesByLoad(t *testing.T) {
	r, _ := newTestRouter(t, Config{Pool: "p"})
	bs := backends(3)
	bs[0].set(5)
	bs[1].set(0)
	bs[2].set(5)
	for range 10 {
		if got := r.Pick(cands(bs...), Request{}); got != bs[1] {
			t.Fatalf("picked %s", got.Key())
		}
	}
}

func TestPickAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	r, _ := newTestRouter(t, Config{Pool: "p"})
	bs := backends(8)
	c := cands(bs...)
	p := prompt(1, 10)
	r.Pick(c, Request{Blocks: p, Session: "s"})
	if n := testing.AllocsPerRun(200, func() { r.Pick(c, Request{Blocks: p, Session: "s"}) }); n != 0 {
		t.Errorf("Pick allocates %v times", n)
	}
}

func BenchmarkPick(b *testing.B) {
	r := New(Config{Pool: "p"}, Options{})
	bs := backends(8)
	c := cands(bs...)
	prompts := make([][]uint64, 64)
	for i := range prompts {
		prompts[i] = prompt(i, 8)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Pick(c, Request{Blocks: prompts[i%len(prompts)]})
	}
	b.ReportMetric(float64(len(prompts[0])), "blocks/pick")
}

func TestStaleLoadIgnored(t *testing.T) {
	r, clk := newTestRouter(t, Config{Pool: "p", Scrape: ScrapeConfig{Interval: time.Second}})
	a, b := &backend{key: "a"}, &backend{key: "b"}
	r.Pick(cands(a, b), Request{})
	for _, k := range []string{"a", "b"} {
		rep := (*r.reps.Load())[k]
		rep.load.Store(&loadSample{Load: Load{Engine: "vllm", Waiting: map[string]float64{"a": 30, "b": 0}[k], Running: 5}, at: clk.Now()})
	}
	if got := r.Pick(cands(a, b), Request{}); got != b {
		t.Fatalf("picked %s despite its queue", got.Key())
	}
	if e := lastOf(r, "a"); e.Queue != 30 || e.Outstanding != 35 {
		t.Errorf("explain of a: %+v", e)
	}
	clk.Advance(3*time.Second + time.Millisecond)
	b.set(3) // the gateway's own view is all that is left
	if got := r.Pick(cands(a, b), Request{}); got != a {
		t.Fatalf("a stale queue still counted: picked %s", got.Key())
	}
	if e := lastOf(r, "a"); e.Queue != 0 || e.Outstanding != 0 {
		t.Errorf("explain of a with a stale scrape: %+v", e)
	}
	for _, rs := range r.Status().Replicas {
		if !rs.LoadStale {
			t.Errorf("%s: load not reported stale", rs.Key)
		}
	}
}

func TestFromPool(t *testing.T) {
	p := config.DefaultPool()
	p.Name = "chat"
	c := FromPool(&p)
	if c.Weights != DefaultWeights {
		t.Errorf("default weights from config %+v, package %+v", c.Weights, DefaultWeights)
	}
	want := Config{Pool: "chat", Weights: DefaultWeights, MaxBlocks: DefaultMaxBlocks, IndexEntries: DefaultIndexEntries,
		IndexTTL: DefaultIndexTTL, LoadFactor: DefaultLoadFactor, Scrape: ScrapeConfig{Path: DefaultScrapePath,
			Interval: DefaultScrapeInterval, Timeout: DefaultScrapeTimeout, MaxBytes: DefaultScrapeMaxBytes, StaleAfter: DefaultScrapeStaleAfter}}
	if c != want {
		t.Errorf("FromPool(defaults) = %+v\nwant %+v", c, want)
	}
	p.Scorers = map[string]float64{"prefix": 5, "session": 1}
	p.KVAware.ScrapeInterval = 0
	c = FromPool(&p)
	if c.Weights != (Weights{Prefix: 5, Queue: 1, KVCache: 0.5, Latency: 1, Session: 1}) || c.Scrape.Interval >= 0 {
		t.Errorf("FromPool = %+v", c)
	}
	r := New(c, Options{})
	defer r.Close()
	if got := r.Config().Scrape.Interval; got >= 0 {
		t.Errorf("scraping not off: interval %v", got)
	}
}

// TestSlowReplicaRetried: a slow replica gets no traffic, its estimate
// decays, and it is tried again within seconds; its next sample decides.
func TestSlowReplicaRetried(t *testing.T) {
	r, clk := newTestRouter(t, Config{Pool: "p"})
	a, b, c := &backend{key: "a"}, &backend{key: "b"}, &backend{key: "c"}
	all := cands(a, b, c)
	r.Pick(all, Request{})
	r.ObserveTTFT("c", 8*time.Millisecond, 0)
	firstC := -1
	for sec := range 30 {
		r.ObserveTTFT("a", time.Millisecond, 0)
		r.ObserveTTFT("b", time.Millisecond, 0)
		a.set(4)
		b.set(4)
		if got := r.Pick(all, Request{}); got == c {
			firstC = sec
			break
		}
		clk.Advance(time.Second)
	}
	// 8 ms decays below 3 × 1 ms after τ ln(8/3) ≈ 9.8 s.
	if firstC < 9 || firstC > 11 {
		t.Fatalf("the slow replica was tried again after %d s, want about 10", firstC)
	}
	r.ObserveTTFT("c", 8*time.Millisecond, 0) // still slow: out again
	if got := r.Pick(all, Request{}); got == c {
		t.Error("a replica still slow was picked again")
	}
}

func TestDebugLogExplainsPick(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := New(Config{Pool: "chat"}, Options{Clock: clockwork.NewFakeClock(), Logger: log})
	defer r.Close()
	a, b := &backend{key: "a"}, &backend{key: "b"}
	p := prompt(1, 2)
	r.Pick(cands(a), Request{Blocks: p})
	b.set(1)
	mu.Lock()
	buf.Reset()
	mu.Unlock()
	r.Pick(cands(a, b), Request{Blocks: p})
	mu.Lock()
	line := buf.String()
	mu.Unlock()
	for _, want := range []string{"kv_aware pick", "pool=chat", "replica=a", fmt.Sprintf("prefix=1.00(%d/%d)", len(p), len(p)), "b total="} {
		if !strings.Contains(line, want) {
			t.Errorf("debug line lacks %q:\n%s", want, line)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestConcurrentUse runs picks, TTFT samples, churn and status together
// (for the race detector).
func TestConcurrentUse(t *testing.T) {
	r := New(Config{Pool: "p"}, Options{})
	defer r.Close()
	bs := backends(6)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 300 {
				got := r.Pick(cands(bs...), Request{Blocks: prompt(i%20, 1+g), Session: "s"})
				r.ObserveTTFT(got.Key(), time.Millisecond, 10)
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			r.Forget(bs[i%6].key)
			_ = r.Status()
		}
	})
	wg.Wait()
	if st := r.Status(); len(st.Replicas) == 0 || st.Index.Entries == 0 {
		t.Errorf("status after concurrent use: %+v", st)
	}
}

func TestReconfigure(t *testing.T) {
	r, _ := newTestRouter(t, Config{Pool: "p"})
	a, b := &backend{key: "a"}, &backend{key: "b"}
	p := prompt(1, 2)
	r.Pick(cands(a), Request{Blocks: p})
	b.set(0)
	a.set(3) // over the bound ceil(1.25 × 4 / 2) = 3 (3 + 1 > 3)
	if got := r.Pick(cands(a, b), Request{Blocks: p}); got != b {
		t.Fatalf("picked %s over its bound", got.Key())
	}
	cfg := r.Config()
	cfg.LoadFactor = 4
	cfg.Weights.Prefix = 5
	if !r.Reconfigure(cfg) {
		t.Fatal("re-tuning weights and load factor needed a new router")
	}
	r.Forget("b") // b held p since the last pick; make it a stranger again
	if got := r.Pick(cands(a, b), Request{Blocks: p}); got != a {
		t.Errorf("after raising the load factor, picked %s", got.Key())
	}
	if w := r.Status().Weights; w.Prefix != 5 {
		t.Errorf("status weights %+v", w)
	}
	cfg.IndexEntries = 1 << 20
	if r.Reconfigure(cfg) {
		t.Error("a new index size was applied in place")
	}
	if r.Config().IndexEntries == 1<<20 {
		t.Error("a refused Reconfigure changed the config")
	}
}
