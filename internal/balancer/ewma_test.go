package balancer

import (
	"container/heap"
	"math"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestPeakEWMA(t *testing.T) {
	const tau = 10 * time.Second
	decay := func(d time.Duration) float64 { return math.Exp(-float64(d) / float64(tau)) }
	type step struct {
		advance time.Duration
		observe time.Duration // none: only read
		want    float64       // nanoseconds
	}
	ms := float64(time.Millisecond)
	const none = time.Duration(-1)
	tests := []struct {
		name  string
		steps []step
	}{
		{"no sample reads zero", []step{
			{0, none, 0},
			{time.Minute, none, 0},
		}},
		{"first sample is taken whole", []step{
			{time.Second, 100 * time.Millisecond, 100 * ms},
		}},
		{"a peak is taken at once", []step{
			{0, 100 * time.Millisecond, 100 * ms},
			{time.Millisecond, 300 * time.Millisecond, 300 * ms},
		}},
		{"idle estimate decays toward zero", []step{
			{0, 100 * time.Millisecond, 100 * ms},
			{5 * time.Second, none, 100 * ms * decay(5*time.Second)},
			{5 * time.Second, none, 100 * ms * decay(10*time.Second)},
		}},
		{"a lower sample is blended by elapsed time", []step{
			{0, 100 * time.Millisecond, 100 * ms},
			{5 * time.Second, 20 * time.Millisecond,
				100*ms*decay(5*time.Second) + 20*ms*(1-decay(5*time.Second))},
			{2 * time.Second, 10 * time.Millisecond,
				(100*ms*decay(5*time.Second)+20*ms*(1-decay(5*time.Second)))*decay(2*time.Second) +
					10*ms*(1-decay(2*time.Second))},
		}},
		{"a sample at the same instant carries no weight", []step{
			{0, 100 * time.Millisecond, 100 * ms},
			{0, 10 * time.Millisecond, 100 * ms},
		}},
		{"a peak compares with the decayed estimate", []step{
			{0, 100 * time.Millisecond, 100 * ms},
			{30 * time.Second, none, 100 * ms * decay(30*time.Second)},
			{0, 10 * time.Millisecond, 10 * ms}, // above the decayed 4.98ms
		}},
		{"a zero sample still counts as a sample", []step{
			{0, 0, 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clockwork.NewFakeClock()
			e := NewPeakEWMA(tau, clk)
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				if s.observe != none {
					e.Observe(s.observe)
				}
				if got := e.Value(); math.Abs(got-s.want) > 1e-9*math.Max(1, s.want) {
					t.Errorf("step %d: Value() = %.6g, want %.6g", i, got, s.want)
				}
			}
		})
	}
}

func TestPeakEWMAConverges(t *testing.T) {
	clk := clockwork.NewFakeClock()
	e := NewPeakEWMA(0, clk) // DefaultTau
	e.Observe(500 * time.Millisecond)
	// Steady 20ms responses, one every 100ms: after 10τ the 500ms peak is
	// forgotten (e^-10 of it remains).
	for range int(10 * DefaultTau / (100 * time.Millisecond)) {
		clk.Advance(100 * time.Millisecond)
		e.Observe(20 * time.Millisecond)
	}
	if got, want := e.Value(), float64(20*time.Millisecond); math.Abs(got-want) > 0.001*want+float64(500*time.Millisecond)*math.Exp(-10) {
		t.Errorf("Value() = %v, want about %v", time.Duration(got), time.Duration(want))
	}
}

func TestPeakEWMAConcurrent(t *testing.T) {
	clk := clockwork.NewFakeClock()
	e := NewPeakEWMA(time.Second, clk)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			e.Observe(time.Duration(1+i%7) * time.Millisecond)
		}
	}()
	for range 2000 {
		clk.Advance(time.Microsecond)
		if v := e.Value(); v != 0 && (v < 1 || v > float64(7*time.Millisecond)) {
			t.Fatalf("Value() = %v, outside the samples' range", v)
		}
	}
	<-done
}

// TestP2CEWMAAvoidsASlowReplica runs a closed loop of 16 clients over three
// replicas and one eight times slower, each request taking its replica's
// latency, with every replica's cost the latency it would measure. Round
// robin would give the slow replica a quarter of the requests, each eight
// times longer; p2c_ewma gives it almost none, while p2c, blind to latency,
// gives it clearly more.
func TestP2CEWMAAvoidsASlowReplica(t *testing.T) {
	latency := []int64{10, 10, 10, 80}
	share := func(b Balancer) float64 {
		fs := fakes(len(latency))
		for i, f := range fs {
			f.setCost(float64(latency[i]))
		}
		cands := backends(fs)
		var q events
		var now int64
		picks := make([]int, len(fs))
		start := func() {
			p := b.Pick(cands, "").(*fake)
			i := indexOf(fs, p)
			picks[i]++
			p.inFlight.Add(1)
			heap.Push(&q, event{at: now + latency[i], backend: i})
		}
		for range 16 {
			start()
		}
		for range 20000 {
			ev := heap.Pop(&q).(event)
			now = ev.at
			fs[ev.backend].inFlight.Add(-1)
			start()
		}
		total := 0
		for _, n := range picks {
			total += n
		}
		return float64(picks[3]) / float64(total)
	}
	ewma, p2c := share(NewP2CEWMA(seeded())), share(NewP2C(seeded()))
	t.Logf("slow replica's share: p2c_ewma %.3f, p2c %.3f", ewma, p2c)
	// At the balance point a fast replica with k in flight costs 10(k+1):
	// the slow one (80 with none in flight) only wins when its rival has 8 in
	// flight, and 16 clients spread over three fast replicas rarely do that.
	if ewma > 0.03 {
		t.Errorf("p2c_ewma gives the slow replica %.3f of the requests, want < 0.03", ewma)
	}
	if p2c < 2*ewma || p2c < 0.03 {
		t.Errorf("p2c gives the slow replica %.3f, p2c_ewma %.3f: the simulation does not tell them apart", p2c, ewma)
	}
}

type event struct {
	at      int64
	backend int
}

// events is a min-heap of completions by time.
type events []event

func (q events) Len() int           { return len(q) }
func (q events) Less(i, j int) bool { return q[i].at < q[j].at }
func (q events) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)        { *q = append(*q, x.(event)) }
func (q *events) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

func indexOf(fs []*fake, f *fake) int {
	for i, g := range fs {
		if g == f {
			return i
		}
	}
	return -1
}

// TestP2CEWMANewBackendTriedNotFlooded adds an unsampled backend to a busy
// pool: it takes requests at once, but until its first response it never has
// more than one request above the busiest sampled backend.
func TestP2CEWMANewBackendTriedNotFlooded(t *testing.T) {
	fs := fakes(5)
	for _, f := range fs[:4] {
		f.setCost(float64(10 * time.Millisecond))
		f.inFlight.Store(5)
	}
	fresh := fs[4]
	cands := backends(fs)
	p := NewP2CEWMA(seeded())
	firstPick := -1
	for i := range 200 {
		got := p.Pick(cands, "").(*fake)
		got.inFlight.Add(1) // nothing completes
		if got == fresh && firstPick < 0 {
			firstPick = i
		}
		var busiest int64
		for _, f := range fs[:4] {
			busiest = max(busiest, f.inFlight.Load())
		}
		if n := fresh.inFlight.Load(); n > busiest+1 {
			t.Fatalf("after %d picks the new backend has %d in flight, the busiest sampled one %d", i+1, n, busiest)
		}
	}
	if firstPick < 0 || firstPick > 10 {
		t.Errorf("the new backend was first picked at pick %d, want within the first 10", firstPick)
	}
}
