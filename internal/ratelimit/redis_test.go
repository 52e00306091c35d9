package ratelimit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/sluice-ai/sluice/internal/redistest"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-ai/sluice/internal/config"
)

// slowMachine is the Redis timeout of tests that must not fall back to
// local limits: a loaded test machine can take longer than the default to
// run a burst of hundreds of concurrent scripts.
const slowMachine = 10 * time.Second

// TestRedisBurstIsExactAcrossLimiters is the in-process form of the
// cross-replica proof: three Limiters, each with its own client, share one
// Redis and one (fake) time; a concurrent burst admits exactly the limit.
func TestRedisBurstIsExactAcrossLimiters(t *testing.T) {
	srv := redistest.Start(t)
	tests := []struct {
		name    string
		lim     config.TenantLimits
		reserve int64
		want    int
	}{
		{"rpm 100", config.TenantLimits{RPM: 100}, 0, 100},
		{"tpm 5000 by 50", config.TenantLimits{TPM: 5000}, 50, 100},
		{"concurrency 10", config.TenantLimits{Concurrency: 10}, 0, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := redistest.UniquePrefix(t)
			clock := clockwork.NewFakeClockAt(t0)
			var limiters []*Limiter
			for range 3 {
				limiters = append(limiters, newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, Clock: clock, RedisTimeout: slowMachine}))
			}
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				total int
			)
			for _, l := range limiters {
				wg.Go(func() {
					n := len(burst(l, "team-a", tt.lim, 334, tt.reserve))
					mu.Lock()
					total += n
					mu.Unlock()
				})
			}
			wg.Wait()
			if total != tt.want {
				t.Fatalf("admitted %d of 1002, want %d", total, tt.want)
			}
			for _, l := range limiters {
				if l.Degraded() {
					t.Fatal("a limiter fell back to local limits")
				}
			}
		})
	}
}

// TestRedisServerClock runs with no Clock: Redis's own TIME is the time.
// With rpm 2 a burst admits exactly 2 unless the test takes 30s.
func TestRedisServerClock(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.UniquePrefix(t)
	a := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, RedisTimeout: slowMachine})
	b := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, RedisTimeout: slowMachine})
	lim := config.TenantLimits{RPM: 2}
	got := len(burst(a, "t", lim, 20, 0)) + len(burst(b, "t", lim, 20, 0))
	if got != 2 {
		t.Fatalf("admitted %d, want 2", got)
	}
	_, err := a.Admit(context.Background(), "t", lim, 0)
	if err == nil || err.RetryAfter <= 0 || err.RetryAfter > 30*time.Second {
		t.Fatalf("refusal %+v, want Retry-After in (0, 30s]", err)
	}
}

func TestRedisSettlement(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.UniquePrefix(t)
	clock := clockwork.NewFakeClockAt(t0)
	a := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, Clock: clock, RedisTimeout: slowMachine})
	b := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, Clock: clock, RedisTimeout: slowMachine})
	lim := config.TenantLimits{TPM: 1000, Concurrency: 1}
	ctx := context.Background()

	first, err := a.Admit(ctx, "t", lim, 800)
	if err != nil {
		t.Fatal(err)
	}
	// The other gateway sees both the slot and the tokens taken.
	if _, err := b.Admit(ctx, "t", config.TenantLimits{TPM: 1000}, 300); err == nil {
		t.Fatal("tokens reserved through a were not seen by b")
	}
	if _, err := b.Admit(ctx, "t", lim, 1); err == nil || !strings.Contains(err.Message, "concurrent") {
		t.Fatalf("slot held through a: %+v, want a concurrency refusal", err)
	}
	first.Done(100) // refunds 700, frees the slot
	waitFor(t, "the settlement to reach Redis", func() bool {
		tk, err := b.Admit(ctx, "t", lim, 800)
		if err != nil {
			return false
		}
		tk.Done(-1)
		return true
	})
	h := http.Header{}
	tk, err := b.Admit(ctx, "t", config.TenantLimits{TPM: 1000}, 50)
	if err != nil {
		t.Fatal(err)
	}
	tk.SetHeaders(h)
	// 100 (settled) + 800 (kept) + 50 = 950 used.
	if got := h.Get("x-ratelimit-remaining-tokens"); got != "50" {
		t.Fatalf("remaining tokens = %s, want 50", got)
	}
}

// TestRedisLeases shows a slot surviving its lease while renewed, and
// expiring when its gateway is gone.
func TestRedisLeases(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.UniquePrefix(t)
	clock := clockwork.NewFakeClockAt(t0)
	ctx := context.Background()
	live := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, Clock: clock, RedisTimeout: slowMachine})
	other := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, Clock: clock, RedisTimeout: slowMachine})
	lim := config.TenantLimits{Concurrency: 1}

	held, err := live.Admit(ctx, "t", lim, 0)
	if err != nil {
		t.Fatal(err)
	}
	rdb := srv.Client(t)
	_, _, conc := live.keys("t")
	score := func() float64 { return rdb.ZScore(ctx, conc, held.id).Val() }
	initial := score()
	// Both limiters' goroutines wait on three tickers each.
	if err := clock.BlockUntilContext(ctx, 6); err != nil {
		t.Fatal(err)
	}
	for range 4 { // 80s in all, more than a lease
		clock.Advance(renewEvery)
		want := initial + float64(int64(renewEvery/time.Microsecond))
		waitFor(t, "the lease renewal", func() bool { return score() >= want })
		initial = score()
	}
	if _, err := other.Admit(ctx, "t", lim, 0); err == nil {
		t.Fatal("a renewed slot expired")
	}
	// The holder dies without Done: its slot is freed by the lease alone.
	live.active.Delete(held) // it stops renewing
	clock.Advance(lease)
	if _, err := other.Admit(ctx, "t", lim, 0); err != nil {
		t.Fatalf("an abandoned slot outlived its lease: %v", err)
	}
}

// TestRedisScriptFlush: Redis losing the scripts (a restart) costs nothing
// but a reload.
func TestRedisScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.UniquePrefix(t)
	clock := clockwork.NewFakeClockAt(t0)
	l := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: prefix, Clock: clock, RedisTimeout: slowMachine})
	ctx := context.Background()
	lim := config.TenantLimits{Concurrency: 1}
	tk, err := l.Admit(ctx, "t", lim, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Client(t).ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	tk.Done(0)
	waitFor(t, "the slot freed after SCRIPT FLUSH", func() bool {
		tk, err := l.Admit(ctx, "t", lim, 0)
		if err != nil {
			return false
		}
		tk.Done(0)
		return true
	})
	if l.Degraded() {
		t.Fatal("SCRIPT FLUSH was taken for an outage")
	}
}

func TestRedisFailOpen(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.Private() {
		t.Skip("needs a private redis-server to stop")
	}
	reg := prometheus.NewRegistry()
	clock := clockwork.NewFakeClockAt(t0)
	l := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: redistest.UniquePrefix(t), Clock: clock, Registerer: reg})
	ctx := context.Background()
	lim := config.TenantLimits{RPM: 5}

	if _, err := l.Admit(ctx, "t", lim, 0); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	// Redis is gone: requests are still decided, under per-process limits.
	got := len(burst(l, "t", lim, 50, 0))
	if got != 5 {
		t.Fatalf("admitted %d while Redis was down, want the local limit of 5", got)
	}
	if !l.Degraded() {
		t.Fatal("not degraded with Redis down")
	}
	if v := testutil.ToFloat64(l.m.degraded); v != 1 {
		t.Fatalf("sluice_ratelimit_degraded = %v, want 1", v)
	}
	if v := testutil.ToFloat64(l.m.redisErrors); v < 1 {
		t.Fatalf("sluice_ratelimit_redis_errors_total = %v, want >= 1", v)
	}

	srv.Restart(t)
	if err := clock.BlockUntilContext(ctx, 3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the probe to find Redis", func() bool {
		clock.Advance(probeEvery)
		return !l.Degraded()
	})
	if v := testutil.ToFloat64(l.m.degraded); v != 0 {
		t.Fatalf("sluice_ratelimit_degraded = %v after recovery, want 0", v)
	}
	// Back on Redis, whose state (a fresh server) is empty: rpm 5 again.
	if got := len(burst(l, "t2", lim, 20, 0)); got != 5 {
		t.Fatalf("admitted %d after recovery, want 5", got)
	}
	n, err := srv.Client(t).Exists(ctx, l.prefix+"{t2}:r").Result()
	if err != nil || n != 1 {
		t.Fatalf("state not in Redis after recovery (exists = %d, %v)", n, err)
	}
}

// The cross-process proof. TestCrossProcessBurst starts three copies of this
// test binary, each running TestHelperBurst: a gateway process with its own
// Limiter and Redis client. They wait at a barrier, then each fires its
// share of 1,000 concurrent requests from one tenant with rpm 100.
func TestCrossProcessBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	srv := redistest.Start(t)
	prefix := redistest.UniquePrefix(t)
	const procs, total, rpm = 3, 1000, 100
	// A stuck helper fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	type proc struct {
		cmd   *exec.Cmd
		out   *bufio.Scanner
		stdin interface{ Close() error }
	}
	var ps []proc
	for i := range procs {
		n := total / procs
		if i < total%procs {
			n++
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperBurst$", "-test.count=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Env = append(os.Environ(),
			"SLUICE_RL_HELPER=1",
			"SLUICE_RL_REDIS="+srv.Addr,
			"SLUICE_RL_PREFIX="+prefix,
			"SLUICE_RL_TIME="+strconv.FormatInt(t0.UnixMicro(), 10),
			"SLUICE_RL_N="+strconv.Itoa(n),
			"SLUICE_RL_RPM="+strconv.Itoa(rpm),
		)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		ps = append(ps, proc{cmd: cmd, out: bufio.NewScanner(stdout), stdin: stdin})
	}
	readLine := func(p proc, prefix string) string {
		for p.out.Scan() {
			if rest, ok := strings.CutPrefix(p.out.Text(), prefix); ok {
				return rest
			}
		}
		t.Fatalf("helper ended without a %q line: %v", prefix, p.out.Err())
		return ""
	}
	for _, p := range ps {
		readLine(p, "READY")
	}
	for _, p := range ps { // the barrier: every helper starts on EOF
		p.stdin.Close()
	}
	var (
		admitted  int
		remaining []int
	)
	for _, p := range ps {
		var r helperResult
		if err := json.Unmarshal([]byte(readLine(p, "RESULT ")), &r); err != nil {
			t.Fatal(err)
		}
		if r.Problem != "" {
			t.Fatalf("helper: %s", r.Problem)
		}
		admitted += r.Admitted
		remaining = append(remaining, r.Remaining...)
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("helper exited: %v", err)
		}
	}
	if admitted != rpm {
		t.Fatalf("3 processes admitted %d of %d, want exactly %d", admitted, total, rpm)
	}
	// Every admission saw a distinct state: remaining counts 99 down to 0.
	slices.Sort(remaining)
	for i, r := range remaining {
		if r != i {
			t.Fatalf("remaining-requests values of admitted requests = %v, want 0..99 once each", remaining)
		}
	}
}

type helperResult struct {
	Admitted  int    `json:"admitted"`
	Remaining []int  `json:"remaining"`
	Problem   string `json:"problem,omitempty"`
}

// TestHelperBurst is one gateway process of TestCrossProcessBurst; run
// alone it does nothing.
func TestHelperBurst(t *testing.T) {
	if os.Getenv("SLUICE_RL_HELPER") != "1" {
		t.Skip("helper process for TestCrossProcessBurst")
	}
	env := func(k string) int64 {
		v, err := strconv.ParseInt(os.Getenv(k), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return v
	}
	srv := &redistest.Server{Addr: os.Getenv("SLUICE_RL_REDIS")}
	clock := clockwork.NewFakeClockAt(time.UnixMicro(env("SLUICE_RL_TIME")))
	l := newLimiter(t, Options{Redis: srv.Client(t), KeyPrefix: os.Getenv("SLUICE_RL_PREFIX"), Clock: clock, RedisTimeout: slowMachine})
	n, rpm := int(env("SLUICE_RL_N")), int(env("SLUICE_RL_RPM"))
	lim := config.TenantLimits{RPM: rpm}

	fmt.Println("READY")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until EOF

	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		res helperResult
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			tk, err := l.Admit(context.Background(), "team-a", lim, 0)
			h := http.Header{}
			tk.SetHeaders(h)
			mu.Lock()
			defer mu.Unlock()
			if h.Get("x-ratelimit-limit-requests") != strconv.Itoa(rpm) {
				res.Problem = fmt.Sprintf("x-ratelimit-limit-requests = %q", h.Get("x-ratelimit-limit-requests"))
			}
			rem, _ := strconv.Atoi(h.Get("x-ratelimit-remaining-requests"))
			if err == nil {
				res.Admitted++
				res.Remaining = append(res.Remaining, rem)
				return
			}
			// A refusal: 429, nothing remaining, and Retry-After of one
			// emission interval (60s/rpm), since time stands still.
			if err.Status != http.StatusTooManyRequests || rem != 0 || err.RetryAfter != window/time.Duration(rpm) {
				res.Problem = fmt.Sprintf("refusal %d %q Retry-After %v remaining %d", err.Status, err.Message, err.RetryAfter, rem)
			}
		})
	}
	close(start)
	wg.Wait()
	if l.Degraded() {
		res.Problem = "fell back to local limits"
	}
	out, _ := json.Marshal(res)
	fmt.Println("RESULT " + string(out))
}

// BenchmarkAdmitRedis measures one Admit and its Done against a local
// Redis: one round trip for Admit (Done is queued).
func BenchmarkAdmitRedis(b *testing.B) {
	srv := redistest.Start(b)
	l := newLimiter(b, Options{Redis: srv.Client(b), KeyPrefix: redistest.UniquePrefix(b), RedisTimeout: slowMachine})
	lim := config.TenantLimits{RPM: 1 << 30, TPM: 1 << 30, Concurrency: 1 << 20}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		t, err := l.Admit(ctx, "bench", lim, 100)
		if err != nil {
			b.Fatal(err)
		}
		t.Done(80)
	}
}

// BenchmarkRedisRoundTrip is the baseline for BenchmarkAdmitRedis: one
// PING.
func BenchmarkRedisRoundTrip(b *testing.B) {
	srv := redistest.Start(b)
	c := srv.Client(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
