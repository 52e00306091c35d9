package ratelimit

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/config"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the fail-open test causes many.
	redis.SetLogger(discardLogger{})
	goleak.VerifyTestMain(m)
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newLimiter(t testing.TB, opts Options) *Limiter {
	t.Helper()
	l, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(l.Close)
	return l
}

// burst sends n Admits from n goroutines at once and returns the admitted
// tickets.
func burst(l *Limiter, tenant string, lim config.TenantLimits, n int, reserve int64) []*Ticket {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted []*Ticket
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			t, err := l.Admit(context.Background(), tenant, lim, reserve)
			if err == nil {
				mu.Lock()
				admitted = append(admitted, t)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return admitted
}

func TestLocalBurstIsExact(t *testing.T) {
	tests := []struct {
		name    string
		lim     config.TenantLimits
		reserve int64
		want    int
	}{
		{"rpm 100", config.TenantLimits{RPM: 100}, 0, 100},
		{"rpm 7", config.TenantLimits{RPM: 7}, 0, 7},
		{"rpm 1", config.TenantLimits{RPM: 1}, 0, 1},
		{"tpm 1000 by 100", config.TenantLimits{TPM: 1000}, 100, 10},
		{"tpm 999 by 100", config.TenantLimits{TPM: 999}, 100, 9},
		{"tpm 7 by 1", config.TenantLimits{TPM: 7}, 1, 7},
		{"rpm binds before tpm", config.TenantLimits{RPM: 5, TPM: 1000}, 10, 5},
		{"tpm binds before rpm", config.TenantLimits{RPM: 500, TPM: 1000}, 10, 100},
		{"concurrency", config.TenantLimits{Concurrency: 16}, 0, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter(t, Options{Clock: clockwork.NewFakeClockAt(t0)})
			if got := len(burst(l, "team-a", tt.lim, 1000, tt.reserve)); got != tt.want {
				t.Fatalf("admitted %d of 1000, want %d", got, tt.want)
			}
			// Another tenant has its own allowance.
			if got := len(burst(l, "team-b", tt.lim, 1000, tt.reserve)); got != tt.want {
				t.Fatalf("second tenant: admitted %d of 1000, want %d", got, tt.want)
			}
		})
	}
}

func TestRefillAndRetryAfter(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	l := newLimiter(t, Options{Clock: clock})
	lim := config.TenantLimits{RPM: 60}
	ctx := context.Background()
	for i := range 60 {
		if _, err := l.Admit(ctx, "a", lim, 0); err != nil {
			t.Fatalf("request %d refused: %v", i, err)
		}
	}
	_, err := l.Admit(ctx, "a", lim, 0)
	if err == nil || err.Status != http.StatusTooManyRequests || err.RetryAfter != time.Second {
		t.Fatalf("61st: %+v, want 429 with Retry-After 1s", err)
	}
	clock.Advance(999 * time.Millisecond)
	if _, err := l.Admit(ctx, "a", lim, 0); err == nil || err.RetryAfter != time.Millisecond {
		t.Fatalf("after 999ms: %+v, want 429 with Retry-After 1ms", err)
	}
	clock.Advance(time.Millisecond)
	if _, err := l.Admit(ctx, "a", lim, 0); err != nil {
		t.Fatalf("after 1s: %v", err)
	}
	clock.Advance(time.Minute)
	for i := range 60 {
		if _, err := l.Admit(ctx, "a", lim, 0); err != nil {
			t.Fatalf("after a minute, request %d refused: %v", i, err)
		}
	}
	if _, err := l.Admit(ctx, "a", lim, 0); err == nil {
		t.Fatal("more than a minute's allowance admitted after refill")
	}
}

func TestTokens(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	l := newLimiter(t, Options{Clock: clock})
	lim := config.TenantLimits{TPM: 1000}
	ctx := context.Background()

	a, err := l.Admit(ctx, "a", lim, 600)
	if err != nil {
		t.Fatal(err)
	}
	// 600 of 1000 used: 600 more need 200 tokens to drain, 200/1000 of a
	// minute.
	_, err = l.Admit(ctx, "a", lim, 600)
	if err == nil || err.RetryAfter != 12*time.Second || !strings.Contains(err.Message, "1000 tokens per minute") {
		t.Fatalf("over tpm: %+v, want 429 with Retry-After 12s", err)
	}
	// Settling the first at its real use of 100 refunds 500.
	a.Done(100)
	b, err := l.Admit(ctx, "a", lim, 600)
	if err != nil {
		t.Fatalf("after refund: %v", err)
	}
	// Now 700 used. Charging 1300 for b (700 over its reservation) puts the
	// tenant 1000 in debt: nothing fits until it drains.
	b.Done(1300)
	b.Done(0) // only the first Done counts
	h := http.Header{}
	t2, err := l.Admit(ctx, "a", lim, 1)
	t2.SetHeaders(h)
	if err == nil {
		t.Fatal("admitted while in debt")
	}
	// 1400 used: 1.4 minutes to drain.
	if h.Get("x-ratelimit-remaining-tokens") != "0" || h.Get("x-ratelimit-reset-tokens") != "1m24s" {
		t.Fatalf("headers in debt: %v", h)
	}
	clock.Advance(24 * time.Second) // drains 400 tokens: 1000 used
	if _, err := l.Admit(ctx, "a", lim, 1); err == nil || err.RetryAfter != 60*time.Millisecond {
		t.Fatalf("at the limit: %+v, want 429 with Retry-After 60ms", err)
	}
	clock.Advance(60 * time.Millisecond)
	if _, err := l.Admit(ctx, "a", lim, 1); err != nil {
		t.Fatalf("after draining the debt: %v", err)
	}

	// A reservation above the limit itself can never fit.
	_, err = l.Admit(ctx, "b", lim, 1001)
	if err == nil || err.RetryAfter != 0 || !strings.Contains(err.Message, "too large") {
		t.Fatalf("too large: %+v, want 429 without Retry-After", err)
	}
	// Unknown usage keeps the reservation.
	c, err := l.Admit(ctx, "c", lim, 1000)
	if err != nil {
		t.Fatal(err)
	}
	c.Done(-1)
	if _, err := l.Admit(ctx, "c", lim, 1); err == nil {
		t.Fatal("unknown usage refunded the reservation")
	}
}

func TestConcurrency(t *testing.T) {
	l := newLimiter(t, Options{Clock: clockwork.NewFakeClockAt(t0)})
	lim := config.TenantLimits{Concurrency: 2}
	ctx := context.Background()
	a, _ := l.Admit(ctx, "a", lim, 0)
	b, _ := l.Admit(ctx, "a", lim, 0)
	refused, err := l.Admit(ctx, "a", lim, 0)
	if err == nil || err.RetryAfter != concurrencyRetry || !strings.Contains(err.Message, "2 concurrent") {
		t.Fatalf("third: %+v, want a concurrency 429", err)
	}
	refused.Done(0) // a refused ticket holds nothing
	a.Done(0)
	a.Done(0) // frees one slot, once
	if _, err := l.Admit(ctx, "a", lim, 0); err != nil {
		t.Fatalf("after a slot freed: %v", err)
	}
	if _, err := l.Admit(ctx, "a", lim, 0); err == nil {
		t.Fatal("a slot was freed twice")
	}
	b.Done(0)
}

func TestHeaders(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	l := newLimiter(t, Options{Clock: clock})
	lim := config.TenantLimits{RPM: 100, TPM: 1000}
	ctx := context.Background()

	tk, err := l.Admit(ctx, "a", lim, 10)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	tk.SetHeaders(h)
	want := map[string]string{
		"x-ratelimit-limit-requests":     "100",
		"x-ratelimit-remaining-requests": "99",
		"x-ratelimit-reset-requests":     "600ms",
		"x-ratelimit-limit-tokens":       "1000",
		"x-ratelimit-remaining-tokens":   "990",
		"x-ratelimit-reset-tokens":       "600ms",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}

	for range 99 {
		_, _ = l.Admit(ctx, "a", lim, 1)
	}
	refused, err := l.Admit(ctx, "a", lim, 1)
	if err == nil {
		t.Fatal("101st admitted")
	}
	h = http.Header{}
	refused.SetHeaders(h)
	if h.Get("x-ratelimit-remaining-requests") != "0" || h.Get("x-ratelimit-reset-requests") != "1m0s" ||
		h.Get("x-ratelimit-remaining-tokens") != "891" {
		t.Errorf("headers on a 429: %v", h)
	}

	// A tenant with no limits gets no headers and an inert ticket.
	free, err := l.Admit(ctx, "free", config.TenantLimits{}, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	h = http.Header{}
	free.SetHeaders(h)
	free.Done(5)
	if len(h) != 0 {
		t.Errorf("unlimited tenant got headers %v", h)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l := newLimiter(t, Options{Clock: clockwork.NewFakeClockAt(t0), Registerer: reg})
	ctx := context.Background()
	for range 3 {
		_, _ = l.Admit(ctx, "a", config.TenantLimits{RPM: 1}, 0)
	}
	_, _ = l.Admit(ctx, "b", config.TenantLimits{TPM: 10}, 11)
	if got := testutil.ToFloat64(l.m.limited.WithLabelValues("a", "rpm")); got != 2 {
		t.Errorf(`sluice_ratelimited_total{tenant="a",limit="rpm"} = %v, want 2`, got)
	}
	if got := testutil.ToFloat64(l.m.limited.WithLabelValues("b", "tpm")); got != 1 {
		t.Errorf(`sluice_ratelimited_total{tenant="b",limit="tpm"} = %v, want 1`, got)
	}
	// A second Limiter on the same registry (a reload) shares the series.
	l2 := newLimiter(t, Options{Clock: clockwork.NewFakeClockAt(t0), Registerer: reg})
	if l2.m.limited != l.m.limited {
		t.Error("second Limiter did not reuse the registered metrics")
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_ratelimited_total", "sluice_ratelimit_degraded"); err != nil || n != 3 {
		t.Errorf("gathered %d series (%v), want 3", n, err)
	}
}

func TestSweepDropsIdleTenants(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	l := newLimiter(t, Options{Clock: clock})
	ctx := context.Background()
	busy, _ := l.Admit(ctx, "busy", config.TenantLimits{Concurrency: 1}, 0)
	_, _ = l.Admit(ctx, "idle", config.TenantLimits{RPM: 10}, 0)
	count := func() int {
		n := 0
		l.local.Range(func(_, _ any) bool { n++; return true })
		return n
	}
	if err := clock.BlockUntilContext(ctx, 3); err != nil { // the goroutine's tickers
		t.Fatal(err)
	}
	clock.Advance(sweepEvery)
	waitFor(t, "the idle tenant to be swept", func() bool { return count() == 1 })
	if _, ok := l.local.Load("busy"); !ok {
		t.Fatal("tenant with a request in flight was swept")
	}
	busy.Done(0)
	// A swept tenant starts afresh.
	if _, err := l.Admit(ctx, "idle", config.TenantLimits{RPM: 10}, 0); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds; it is for work the test has already
// caused on the Limiter's goroutine.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestFormatReset(t *testing.T) {
	for us, want := range map[int64]string{
		0:           "0s",
		600_000:     "600ms",
		1_000_000:   "1s",
		7_660_000:   "7.66s",
		360_000_000: "6m0s",
		17_400:      "17ms",
	} {
		if got := formatReset(us); got != want {
			t.Errorf("formatReset(%d) = %q, want %q", us, got, want)
		}
	}
}

func BenchmarkAdmitLocal(b *testing.B) {
	l := newLimiter(b, Options{})
	lim := config.TenantLimits{RPM: 1 << 30, TPM: 1 << 30, Concurrency: 1 << 20}
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tenant := "tenant-" + string(rune('a'+n.Add(1)%8))
		for pb.Next() {
			t, err := l.Admit(ctx, tenant, lim, 100)
			if err != nil {
				b.Fatal(err)
			}
			t.Done(0)
		}
	})
}
