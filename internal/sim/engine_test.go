package sim

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestLatencyModel(t *testing.T) {
	base := Latency{
		TTFT:            20 * time.Millisecond,
		PrefillPerToken: 50 * time.Microsecond,
		ITL:             8 * time.Millisecond,
		BatchPenalty:    0.5,
		MaxRunning:      4,
		Slowdown:        1,
	}
	slow := base
	slow.Slowdown = 2.5
	flat := base
	flat.BatchPenalty = 0

	prefill := []struct {
		name   string
		lat    Latency
		tokens int
		want   time.Duration
	}{
		{"empty prompt", base, 0, 20 * time.Millisecond},
		{"100 tokens", base, 100, 25 * time.Millisecond},
		{"1000 tokens", base, 1000, 70 * time.Millisecond},
		{"slowdown", slow, 100, 62500 * time.Microsecond},
	}
	for _, tc := range prefill {
		if got := tc.lat.Prefill(tc.tokens); got != tc.want {
			t.Errorf("Prefill %s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	itl := []struct {
		name    string
		lat     Latency
		running int
		want    time.Duration
	}{
		{"alone", base, 1, 8 * time.Millisecond},
		{"two", base, 2, 9 * time.Millisecond},
		{"full batch", base, 4, 11 * time.Millisecond},
		{"no penalty", flat, 4, 8 * time.Millisecond},
		{"slowdown", slow, 1, 20 * time.Millisecond},
		{"slowdown full", slow, 4, 27500 * time.Microsecond},
	}
	for _, tc := range itl {
		if got := tc.lat.InterToken(tc.running); got != tc.want {
			t.Errorf("InterToken %s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	huge := base
	huge.Slowdown = 1e6
	if got := huge.Prefill(1 << 40); got <= 0 {
		t.Errorf("Prefill overflowed to %v", got)
	}
}

// testKV is the engine tests' KV cache: ample, with prefix caching.
var testKV = KVCache{BlockTokens: 16, Blocks: 1024, PrefixCaching: true}

// msLatency is a model whose every step is a whole number of milliseconds,
// so a driver advancing the fake clock by 1ms observes exact times.
var msLatency = Latency{
	TTFT:            20 * time.Millisecond,
	PrefillPerToken: time.Millisecond,
	ITL:             8 * time.Millisecond,
	BatchPenalty:    0.5,
	MaxRunning:      4,
	Slowdown:        1,
}

// run is one Generate call under test.
type run struct {
	timing Timing
	err    error
	// emitted holds the fake time of each token relative to t0.
	emitted []time.Duration
	done    chan struct{}
}

type harness struct {
	t  *testing.T
	fc *clockwork.FakeClock
	e  *Engine
	t0 time.Time
	mu sync.Mutex
	// firstTokens records the order in which runs produced their first token.
	firstTokens []int
	wg          sync.WaitGroup
}

func newHarness(t *testing.T, lat Latency) *harness {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fc := clockwork.NewFakeClockAt(t0)
	return &harness{t: t, fc: fc, e: NewEngine(lat, testKV, fc), t0: t0}
}

// start launches a Generate and returns once the engine has admitted or
// queued it, so that start order is arrival order.
func (h *harness) start(ctx context.Context, id, prompt, output int) *run {
	h.t.Helper()
	return h.startPrompt(ctx, id, Prompt{Tokens: prompt}, output)
}

// startPrompt is start with a prompt that may hit the prefix cache.
func (h *harness) startPrompt(ctx context.Context, id int, prompt Prompt, output int) *run {
	h.t.Helper()
	r := &run{done: make(chan struct{})}
	before := h.e.Running() + h.e.Waiting()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(r.done)
		r.timing, r.err = h.e.Generate(ctx, prompt, output, func(i int) error {
			r.emitted = append(r.emitted, h.fc.Since(h.t0))
			if i == 0 {
				h.mu.Lock()
				h.firstTokens = append(h.firstTokens, id)
				h.mu.Unlock()
			}
			return nil
		})
	}()
	h.waitFor(func() bool { return h.e.Running()+h.e.Waiting() > before })
	return r
}

// waitFor polls cond; the engine moves in other goroutines, so a test
// waits for it to reach a state rather than for a time.
func (h *harness) waitFor(cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatal("engine did not reach the expected state")
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// drive advances the fake clock 1ms at a time, each time only once every
// running request is parked on its timer, until all runs are done.
func (h *harness) drive(runs ...*run) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range runs {
		for {
			select {
			case <-r.done:
			default:
				if time.Now().After(deadline) {
					h.t.Fatal("runs did not finish")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
				err := h.fc.BlockUntilContext(ctx, h.e.Running())
				cancel()
				if err == nil {
					h.fc.Advance(time.Millisecond)
				}
				continue
			}
			break
		}
	}
	h.wg.Wait()
}

func TestEngineTTFTGrowsWithPrompt(t *testing.T) {
	tests := []struct {
		prompt int
		want   time.Duration
	}{
		{0, 20 * time.Millisecond},
		{10, 30 * time.Millisecond},
		{100, 120 * time.Millisecond},
	}
	for _, tc := range tests {
		h := newHarness(t, msLatency)
		r := h.start(t.Context(), 0, tc.prompt, 3)
		h.drive(r)
		if r.err != nil {
			t.Fatalf("prompt %d: %v", tc.prompt, r.err)
		}
		if r.timing.FirstToken != tc.want || r.emitted[0] != tc.want {
			t.Errorf("prompt %d: first token at %v (timing %v), want %v", tc.prompt, r.emitted[0], r.timing.FirstToken, tc.want)
		}
		if want := tc.want + 2*msLatency.ITL; r.timing.Total != want {
			t.Errorf("prompt %d: total %v, want %v", tc.prompt, r.timing.Total, want)
		}
	}
}

func TestEngineITLGrowsWithBatch(t *testing.T) {
	tests := []struct {
		batch int
		want  time.Duration
	}{
		{1, 8 * time.Millisecond},
		{2, 9 * time.Millisecond},
		{4, 11 * time.Millisecond},
	}
	for _, tc := range tests {
		h := newHarness(t, msLatency)
		var runs []*run
		for i := range tc.batch {
			runs = append(runs, h.start(t.Context(), i, 0, 5))
		}
		h.drive(runs...)
		for i, r := range runs {
			if r.err != nil || len(r.emitted) != 5 {
				t.Fatalf("batch %d run %d: %d tokens, err %v", tc.batch, i, len(r.emitted), r.err)
			}
			for k := 1; k < len(r.emitted); k++ {
				if gap := r.emitted[k] - r.emitted[k-1]; gap != tc.want {
					t.Errorf("batch %d run %d: token %d came %v after the previous, want %v", tc.batch, i, k, gap, tc.want)
				}
			}
		}
	}
}

// TestEngineITLFollowsTheBatch checks that the inter-token latency is
// re-evaluated per token: a long request speeds up once a short one leaves.
func TestEngineITLFollowsTheBatch(t *testing.T) {
	h := newHarness(t, msLatency)
	long := h.start(t.Context(), 0, 0, 6)
	short := h.start(t.Context(), 1, 3, 2)
	h.drive(long, short)
	// The short request's tokens come at 23ms and 32ms, when it leaves. The
	// long one's tokens at 29ms and 38ms were scheduled while both ran, the
	// later ones while it ran alone.
	want := []time.Duration{20, 29, 38, 46, 54, 62}
	for i, w := range want {
		if long.emitted[i] != w*time.Millisecond {
			t.Fatalf("long run emitted at %v, want %v ms", long.emitted, want)
		}
	}
	if short.emitted[1] != 32*time.Millisecond {
		t.Errorf("short run emitted at %v, want [23ms 32ms]", short.emitted)
	}
}

func TestEngineQueue(t *testing.T) {
	lat := msLatency
	lat.MaxRunning = 2
	h := newHarness(t, lat)
	var runs []*run
	for i := range 5 {
		runs = append(runs, h.start(t.Context(), i, 0, 2))
	}
	if got, want := h.e.Running(), 2; got != want {
		t.Errorf("running %d, want %d", got, want)
	}
	if got, want := h.e.Waiting(), 3; got != want {
		t.Errorf("waiting %d, want %d", got, want)
	}
	if got, want := h.e.KVTokens(), int64(0); got != want {
		t.Errorf("kv tokens %d before any output, want %d", got, want)
	}
	h.drive(runs...)
	// Each pair runs a 20ms prefill and one token 10ms later (a full batch
	// of two); the third and fourth requests wait for the first pair, the
	// fifth for two pairs.
	for i, want := range []time.Duration{0, 0, 30, 30, 60} {
		if got := runs[i].timing.Queued; got != want*time.Millisecond {
			t.Errorf("run %d queued %v, want %vms", i, got, want)
		}
		if got := runs[i].timing.FirstToken; got != (want+20)*time.Millisecond {
			t.Errorf("run %d first token after %v, want %vms", i, got, want+20)
		}
	}
	if h.e.Running() != 0 || h.e.Waiting() != 0 || h.e.KVTokens() != 0 {
		t.Errorf("engine not idle after the runs: running %d waiting %d kv %d", h.e.Running(), h.e.Waiting(), h.e.KVTokens())
	}
}

func TestEngineQueueIsFIFO(t *testing.T) {
	lat := msLatency
	lat.MaxRunning = 1
	h := newHarness(t, lat)
	var runs []*run
	for i := range 6 {
		runs = append(runs, h.start(t.Context(), i, 0, 2))
	}
	h.drive(runs...)
	for i, id := range h.firstTokens {
		if id != i {
			t.Fatalf("requests started in order %v, want arrival order", h.firstTokens)
		}
		if got, want := runs[i].timing.Queued, time.Duration(i)*28*time.Millisecond; got != want {
			t.Errorf("run %d queued %v, want %v", i, got, want)
		}
	}
}

func TestEngineSlowdownMultiplies(t *testing.T) {
	var totals []time.Duration
	for _, slowdown := range []float64{1, 3} {
		lat := msLatency
		lat.Slowdown = slowdown
		h := newHarness(t, lat)
		r := h.start(t.Context(), 0, 4, 3)
		h.drive(r)
		totals = append(totals, r.timing.Total)
	}
	if totals[0] != 40*time.Millisecond || totals[1] != 3*totals[0] {
		t.Errorf("totals %v, want 40ms and 120ms", totals)
	}
}

func TestEngineCancelFreesSlot(t *testing.T) {
	lat := msLatency
	lat.MaxRunning = 1
	h := newHarness(t, lat)
	runningCtx, cancelRunning := context.WithCancel(t.Context())
	waitingCtx, cancelWaiting := context.WithCancel(t.Context())
	defer cancelRunning()
	defer cancelWaiting()

	first := h.start(runningCtx, 0, 0, 100)
	second := h.start(waitingCtx, 1, 0, 1)
	third := h.start(t.Context(), 2, 0, 1)
	if h.e.Waiting() != 2 {
		t.Fatalf("waiting %d, want 2", h.e.Waiting())
	}

	cancelWaiting()
	<-second.done
	if !errors.Is(second.err, context.Canceled) || h.e.Waiting() != 1 {
		t.Fatalf("cancelled waiter: err %v, waiting %d", second.err, h.e.Waiting())
	}

	cancelRunning()
	<-first.done
	if !errors.Is(first.err, context.Canceled) {
		t.Fatalf("cancelled runner: err %v", first.err)
	}
	// The slot passes to the third request at once, without the clock moving.
	h.waitFor(func() bool { return h.e.Waiting() == 0 && h.e.Running() == 1 })
	h.drive(third)
	if third.err != nil || third.timing.Queued != 0 {
		t.Errorf("third: err %v queued %v", third.err, third.timing.Queued)
	}
}

func TestEngineEncodeCostsOnePrefill(t *testing.T) {
	h := newHarness(t, msLatency)
	done := make(chan Timing)
	go func() {
		tm, _ := h.e.Encode(t.Context(), 30)
		done <- tm
	}()
	h.waitFor(func() bool { return h.e.Running() == 1 })
	var tm Timing
	for tm.Total == 0 {
		select {
		case tm = <-done:
		default:
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Millisecond)
			if h.fc.BlockUntilContext(ctx, 1) == nil {
				h.fc.Advance(time.Millisecond)
			}
			cancel()
		}
	}
	if want := 50 * time.Millisecond; tm.Total != want {
		t.Errorf("encode took %v, want %v", tm.Total, want)
	}
}
