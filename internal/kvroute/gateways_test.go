package kvroute

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// simResult is what a closed-loop replay measured.
type simResult struct {
	hits, bound, total float64 // prompt blocks: predicted hits, single-cache bound, all
	maxShare           float64 // the busiest replica's picks over the mean
}

// simulate replays a closed loop of 60 conversations over 6 replicas
// through gateways routers, the client spreading requests over them at
// random. Each gateway sees only its own requests in flight, as real ones
// do. With share, every pick's index record reaches the other gateways
// before the next request (what Redis pub/sub does within milliseconds).
func simulate(t *testing.T, gateways int, share bool, seed uint64) simResult {
	t.Helper()
	clk := clockwork.NewFakeClock()
	m := NewMetrics(nil)
	type gw struct {
		r  *Router
		bs []*backend
	}
	var gws []gw
	for g := range gateways {
		r := New(Config{Pool: fmt.Sprint("g", g)}, Options{Clock: clk, Metrics: m})
		t.Cleanup(r.Close)
		if share {
			r.sync = newSyncer(r, nil) // batches only; delivered below
		}
		gws = append(gws, gw{r: r, bs: backends(6)})
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	type done struct {
		at int
		b  *backend
	}
	var running []done
	seen := map[uint64]bool{}
	prompts := map[[2]int][]uint64{}
	picks := map[string]int{}
	var res simResult
	const steps = 2000
	for step := range steps {
		keep := running[:0]
		for _, d := range running {
			if d.at <= step {
				d.b.in.Add(-1)
			} else {
				keep = append(keep, d)
			}
		}
		running = keep
		key := [2]int{rng.IntN(60), 1 + step/100}
		p, ok := prompts[key]
		if !ok {
			p = prompt(key[0], key[1])
			prompts[key] = p
		}
		g := gws[rng.IntN(len(gws))]
		got := g.r.Pick(cands(g.bs...), Request{Blocks: p}).(*backend)
		got.in.Add(1)
		running = append(running, done{at: step + 24 + rng.IntN(48), b: got})
		picks[got.key]++
		if share {
			s := g.r.sync
			s.mu.Lock()
			msg := append([]byte(nil), s.batch...)
			s.batch, s.records = s.batch[:0], 0
			s.mu.Unlock()
			for _, peer := range gws {
				if peer.r != g.r {
					var scratch []uint64
					peer.r.sync.apply(msg, &scratch)
				}
			}
		}
		res.total += float64(len(p))
		for i, h := range p {
			if !seen[h] {
				for _, h := range p[i:] {
					seen[h] = true
				}
				break
			}
			res.bound++
		}
	}
	for g := range gws {
		res.hits += testutil.ToFloat64(m.Blocks.WithLabelValues(fmt.Sprint("g", g), "hit"))
	}
	for _, n := range picks {
		res.maxShare = max(res.maxShare, float64(n)/(steps/6.0))
	}
	return res
}

// TestGatewaysRouteAsOne: three gateways that share their index keep the
// hit ratio of one; without sharing it drops.
func TestGatewaysRouteAsOne(t *testing.T) {
	one := simulate(t, 1, false, 1)
	shared := simulate(t, 3, true, 1)
	alone := simulate(t, 3, false, 1)
	ratio := func(r simResult) float64 { return r.hits / r.bound }
	t.Logf("hit ratio of the single-cache bound: one gateway %.3f, three sharing %.3f, three alone %.3f; max/mean picks %.2f, %.2f, %.2f",
		ratio(one), ratio(shared), ratio(alone), one.maxShare, shared.maxShare, alone.maxShare)
	if ratio(shared) < 0.9*ratio(one) {
		t.Errorf("three sharing gateways hit %.3f of the bound, one gateway %.3f: want >= 0.9×", ratio(shared), ratio(one))
	}
	if ratio(alone) >= ratio(shared) {
		t.Errorf("gateways that do not share hit %.3f, sharing ones %.3f: the test shows nothing", ratio(alone), ratio(shared))
	}
	if shared.maxShare > 1.25 {
		t.Errorf("max/mean picks %.2f with three gateways, want <= 1.25", shared.maxShare)
	}
}

// TestReplicaJoins: a replica that joins a busy pool holds nothing, yet it
// takes its share at once (misses and bounded spill go to the least
// loaded), and the pool keeps its hit ratio.
func TestReplicaJoins(t *testing.T) {
	r, _ := newTestRouter(t, Config{Pool: "p"})
	bs := backends(4)
	rng := rand.New(rand.NewPCG(3, 4))
	type done struct {
		at int
		b  *backend
	}
	var running []done
	prompts := map[[2]int][]uint64{}
	newcomer := 0
	const steps, join = 2000, 1000
	for step := range steps {
		keep := running[:0]
		for _, d := range running {
			if d.at <= step {
				d.b.in.Add(-1)
			} else {
				keep = append(keep, d)
			}
		}
		running = keep
		key := [2]int{rng.IntN(40), 1 + step/100}
		p, ok := prompts[key]
		if !ok {
			p = prompt(key[0], key[1])
			prompts[key] = p
		}
		live := bs[:3]
		if step >= join {
			live = bs
		}
		got := r.Pick(cands(live...), Request{Blocks: p}).(*backend)
		got.in.Add(1)
		running = append(running, done{at: step + 16 + rng.IntN(32), b: got})
		if step >= join+200 && got == bs[3] {
			newcomer++
		}
	}
	share := float64(newcomer) / float64(steps-join-200)
	t.Logf("the new replica took %.2f of the picks after joining (fair: 0.25)", share)
	if share < 0.18 {
		t.Errorf("the new replica took %.2f of the picks", share)
	}
}
