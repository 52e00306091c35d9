//go:build linux

package replicas_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/replicas"
	"github.com/sluice-ai/sluice/internal/upstream"
)

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestReplicasStartAndJoinThePool(t *testing.T) {
	h := start(t, "chat", processConfig(simCommand(), 3), replicas.Options{})
	waitFor(t, 20*time.Second, "3 ready replicas", func() bool { return h.pool.Ready() == 3 })

	st := h.set.Status()
	if st.Desired != 3 || st.Ready != 3 || st.Starting != 0 || len(st.Replicas) != 3 {
		t.Fatalf("status %+v, want 3 desired and ready", st)
	}
	ports := map[int]bool{}
	for i, r := range st.Replicas {
		if want := "chat-" + strconv.Itoa(i+1); r.ID != want || r.State != "ready" || r.PID == 0 {
			t.Errorf("replica %d: %+v, want id %s ready with a pid", i, r, want)
		}
		if ports[r.Port] {
			t.Errorf("port %d given to two replicas", r.Port)
		}
		ports[r.Port] = true
		// {port} made the sim listen where the backend points, and {id}
		// named it.
		resp, _ := get(t, r.URL+"/v1/models")
		if resp.StatusCode != 200 || resp.Header.Get("X-Sim-Instance") != r.ID {
			t.Errorf("%s/v1/models: %d, instance %q; want 200 from %s", r.URL, resp.StatusCode, resp.Header.Get("X-Sim-Instance"), r.ID)
		}
	}
	for _, b := range h.pool.Backends() {
		if !strings.HasPrefix(b.Key(), "http://127.0.0.1:") || b.State() != upstream.StateHealthy {
			t.Errorf("backend %s in state %s, want a healthy local URL", b.Key(), b.State())
		}
	}
	if len(h.logs.lines("replica ready", "pool=chat", "replica=chat-2")) != 1 {
		t.Errorf("no ready log line for chat-2:\n%s", h.logs)
	}
}

func TestPortAndIDReachTheEnvironment(t *testing.T) {
	cfg := processConfig([]string{"sh", "-c", `exec "$SIM" sim --addr "127.0.0.1:$SIM_PORT" --id "$SIM_ID gpu $CUDA_VISIBLE_DEVICES"`}, 2)
	cfg.Env = map[string]string{"SIM": sluiceBin(t), "SIM_PORT": "{port}", "SIM_ID": "replica {id} on {port}", "CUDA_VISIBLE_DEVICES": "{gpu}"}
	h := start(t, "env", cfg, replicas.Options{})
	waitFor(t, 20*time.Second, "two ready replicas", func() bool { return h.pool.Ready() == 2 })
	// {gpu} is the replica's index from 0: each replica its own device.
	for i, r := range h.set.Status().Replicas {
		resp, _ := get(t, r.URL+"/health")
		if want := "replica env-" + strconv.Itoa(i+1) + " on " + strconv.Itoa(r.Port) + " gpu " + strconv.Itoa(i); resp.Header.Get("X-Sim-Instance") != want {
			t.Errorf("instance %q, want %q", resp.Header.Get("X-Sim-Instance"), want)
		}
	}
}

// TestHungReplicaIsRestarted stops a ready replica with SIGSTOP: alive, but
// answering nothing. It leaves rotation, and once its ready path has failed
// for unhealthy_timeout it is killed and started again under its id.
func TestHungReplicaIsRestarted(t *testing.T) {
	cfg := processConfig(simCommand(), 2)
	cfg.UnhealthyTimeout = config.Duration(time.Second)
	reg := prometheus.NewRegistry()
	h := start(t, "hung", cfg, replicas.Options{RestartBackoff: 100 * time.Millisecond, Metrics: replicas.NewMetrics(reg)})
	waitFor(t, 20*time.Second, "2 ready replicas", func() bool { return h.pool.Ready() == 2 })
	victim := h.set.Status().Replicas[0]
	if err := syscall.Kill(victim.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(victim.PID, syscall.SIGCONT) })

	waitFor(t, 10*time.Second, "the hung replica to leave rotation", func() bool {
		for _, b := range backendsIn(h.pool, upstream.StateHealthy) {
			if b.Key() == victim.URL {
				return false
			}
		}
		return true
	})
	waitFor(t, 20*time.Second, "the hung replica to be replaced", func() bool {
		st := h.set.Status()
		return st.Restarts == 1 && st.Ready == 2 && h.pool.Ready() == 2 && st.Replicas[0].PID != victim.PID
	})
	if alive(victim.PID) {
		t.Errorf("the hung process %d is still alive", victim.PID)
	}
	r := h.set.Status().Replicas[0]
	if r.ID != victim.ID || !strings.Contains(r.LastExit, "unhealthy_timeout") || r.CrashLoop {
		t.Errorf("after restart: %+v, want %s, last exit naming unhealthy_timeout, no crash loop", r, victim.ID)
	}
	if resp, _ := get(t, r.URL+"/health"); resp.StatusCode != 200 {
		t.Errorf("restarted replica answers %d", resp.StatusCode)
	}
	if got := testutil.ToFloat64(metricOf(t, reg, "sluice_replica_restarts_total", "reason", "unhealthy")); got != 1 {
		t.Errorf("sluice_replica_restarts_total{reason=unhealthy} = %v, want 1", got)
	}
	if len(h.logs.lines("replica hung", "replica=hung-1")) != 1 {
		t.Errorf("hang not logged:\n%s", h.logs)
	}
}

// TestCrashLoopIsReportedAndPaced: a command that exits at once is
// restarted at doubling intervals up to the cap, reported as crash-looping
// from its third failure in the status, the log and the metrics.
func TestCrashLoopIsReportedAndPaced(t *testing.T) {
	cfg := processConfig([]string{"sh", "-c", "echo cannot load weights on port $0; exit 3", "{port}"}, 1)
	reg := prometheus.NewRegistry()
	h := start(t, "loop", cfg, replicas.Options{RestartBackoff: 50 * time.Millisecond, MaxRestartBackoff: 400 * time.Millisecond, Metrics: replicas.NewMetrics(reg)})

	var delays []time.Duration
	var last time.Time
	waitFor(t, 20*time.Second, "six failures", func() bool {
		st := h.set.Status()
		if len(st.Replicas) == 0 {
			return false
		}
		r := st.Replicas[0]
		if r.State == "backoff" && !r.NextRestart.IsZero() && !r.NextRestart.Equal(last) {
			last = r.NextRestart
			delays = append(delays, r.NextRestart.Sub(r.Since))
		}
		return r.Failures >= 6
	})
	st := h.set.Status()
	r := st.Replicas[0]
	if !r.CrashLoop || st.CrashLooping != 1 || !strings.Contains(r.LastExit, "exit status 3") || !strings.Contains(r.LastExit, "cannot load weights") {
		t.Errorf("status %+v, want one crash-looping replica with its exit and output", st)
	}
	// Doubling from 50ms (±10% jitter), capped at 400ms: never at full speed.
	for i, d := range delays {
		want := min(50*time.Millisecond<<i, 400*time.Millisecond)
		if i < 5 && (d < want*85/100 || d > want*115/100) {
			t.Errorf("restart %d after %v, want about %v (all: %v)", i+1, d, want, delays)
		}
	}
	if got := testutil.ToFloat64(metricOf(t, reg, "sluice_replicas_crash_looping", "", "")); got != 1 {
		t.Errorf("sluice_replicas_crash_looping = %v, want 1", got)
	}
	if got := testutil.ToFloat64(metricOf(t, reg, "sluice_replica_restarts_total", "reason", "crash")); got < 6 {
		t.Errorf("sluice_replica_restarts_total{reason=crash} = %v, want at least 6", got)
	}
	if len(h.logs.lines("replica crash-looping", "replica=loop-1")) == 0 {
		t.Errorf("crash loop not logged:\n%s", h.logs)
	}
}

func TestReplicaJoinsOnlyWhenReadyPathAnswers200(t *testing.T) {
	h := start(t, "slow", processConfig(simCommand("--startup-delay", "1500ms"), 1), replicas.Options{})
	waitFor(t, 20*time.Second, "a starting backend", func() bool { return len(h.pool.Backends()) == 1 })

	// While the sim loads, its backend is in the pool as starting and takes
	// no traffic.
	b := h.pool.Backends()[0]
	sawStarting := false
	for b.State() == upstream.StateStarting {
		sawStarting = true
		if h.pool.Ready() != 0 {
			t.Fatal("a starting replica counts as ready")
		}
		resp, err := http.Get(b.Key() + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && b.State() == upstream.StateStarting {
				// It answered 200 now; the supervisor may not have probed yet.
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawStarting {
		t.Fatal("the replica was never seen starting")
	}
	waitFor(t, 20*time.Second, "the replica to become healthy", func() bool { return b.State() == upstream.StateHealthy })
	if resp, _ := get(t, b.Key()+"/health"); resp.StatusCode != 200 {
		t.Errorf("healthy backend's /health answers %d", resp.StatusCode)
	}
	if got := h.set.StartupTime(); got < 1500*time.Millisecond {
		t.Errorf("StartupTime %s, want at least the sim's 1.5s startup delay", got)
	}
}

func TestStartTimeoutKillsAndRestarts(t *testing.T) {
	cfg := processConfig(simCommand("--startup-delay", "1h"), 1)
	cfg.StartTimeout = config.Duration(500 * time.Millisecond)
	h := start(t, "stuck", cfg, replicas.Options{RestartBackoff: 100 * time.Millisecond})
	waitFor(t, 20*time.Second, "a starting replica", func() bool { return h.set.Status().Starting == 1 })
	first := h.set.Status().Replicas[0].PID
	waitFor(t, 20*time.Second, "a failed start", func() bool { return h.set.Status().Restarts >= 1 })
	waitFor(t, 5*time.Second, "the stuck process to be gone", func() bool { return !alive(first) })
	st := h.set.Status()
	if !strings.Contains(st.Replicas[0].LastExit, "start_timeout") {
		t.Errorf("last exit %q, want it to name start_timeout", st.Replicas[0].LastExit)
	}
	if h.pool.Ready() != 0 {
		t.Error("a replica that never answered 200 is in rotation")
	}
}

func TestCrashedReplicaIsRestarted(t *testing.T) {
	h := start(t, "crash", processConfig(simCommand(), 2), replicas.Options{RestartBackoff: 200 * time.Millisecond})
	waitFor(t, 20*time.Second, "2 ready replicas", func() bool { return h.pool.Ready() == 2 })
	victim := h.set.Status().Replicas[0]

	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the crash to be noticed", func() bool { return h.set.Status().Restarts == 1 })
	for _, b := range h.pool.Backends() {
		if b.Key() == victim.URL && b.State() == upstream.StateHealthy {
			t.Fatal("the crashed replica is still in rotation")
		}
	}
	waitFor(t, 20*time.Second, "the replica to be back", func() bool {
		st := h.set.Status()
		return h.pool.Ready() == 2 && st.Ready == 2 && st.Replicas[0].PID != victim.PID
	})
	st := h.set.Status()
	r := st.Replicas[0]
	if r.ID != victim.ID || r.Restarts != 1 || !strings.Contains(r.LastExit, "signal: killed") {
		t.Errorf("after restart: %+v, want %s with 1 restart and last exit 'signal: killed'", r, victim.ID)
	}
	if resp, _ := get(t, r.URL+"/health"); resp.StatusCode != 200 {
		t.Errorf("restarted replica answers %d", resp.StatusCode)
	}
	if len(h.logs.lines("replica failed; restarting", "replica=crash-1")) != 1 {
		t.Errorf("crash not logged:\n%s", h.logs)
	}
	if len(h.pool.Backends()) != 2 {
		t.Errorf("%d backends after the restart, want 2 (the dead one removed)", len(h.pool.Backends()))
	}
}

func TestScaleDownDrainsInFlightRequests(t *testing.T) {
	// A request to this sim takes 20 × 50ms = 1s.
	cfg := processConfig(simCommand("--itl", "50ms"), 2)
	h := start(t, "drain", cfg, replicas.Options{})
	waitFor(t, 20*time.Second, "2 ready replicas", func() bool { return h.pool.Ready() == 2 })

	// Both replicas are busy; the one with fewer requests in flight is the
	// one to go, and it must finish its request first.
	bs := h.pool.Backends()
	for _, b := range bs {
		b.Acquire()
	}
	bs[0].Acquire() // bs[0] has 2 in flight, bs[1] has 1: bs[1] goes
	defer bs[0].Release(0)
	defer bs[0].Release(0)
	leaving := bs[1]
	var pid int
	for _, r := range h.set.Status().Replicas {
		if r.URL == leaving.Key() {
			pid = r.PID
		}
	}

	var wg sync.WaitGroup
	var status int
	var body string
	wg.Go(func() {
		resp, err := http.Post(leaving.Key()+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"sim-llm","prompt":"hi","max_tokens":20}`))
		if err != nil {
			t.Errorf("in-flight request: %v", err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		status, body = resp.StatusCode, string(b)
		leaving.Release(0) // the proxy's Release when the response is done
	})
	time.Sleep(100 * time.Millisecond) // let the request reach the sim

	if err := h.set.Scale(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the replica to drain", func() bool { return leaving.State() == upstream.StateDraining })
	if h.pool.Ready() != 1 {
		t.Errorf("%d ready during the drain, want 1", h.pool.Ready())
	}
	for leaving.InFlight() > 0 {
		if !alive(pid) {
			t.Fatal("the replica was stopped with a request in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	if status != 200 || !strings.Contains(body, `"completion_tokens":20`) {
		t.Errorf("in-flight request got %d %q, want a whole 200 answer", status, body)
	}
	waitFor(t, 15*time.Second, "the drained replica to exit", func() bool { return !alive(pid) })
	waitFor(t, 5*time.Second, "the backend to leave the pool", func() bool { return len(h.pool.Backends()) == 1 })
	if got := h.pool.Backends()[0]; got != bs[0] {
		t.Errorf("kept %s, want the busier %s", got.Key(), bs[0].Key())
	}
	if st := h.set.Status(); st.Desired != 1 || st.Ready != 1 || st.Restarts != 0 {
		t.Errorf("status %+v, want 1 ready, no restarts", st)
	}
}

func TestStopTimeoutBoundsTheDrain(t *testing.T) {
	cfg := processConfig(simCommand(), 1)
	cfg.StopTimeout = config.Duration(300 * time.Millisecond)
	h := start(t, "stuckdrain", cfg, replicas.Options{})
	waitFor(t, 20*time.Second, "a ready replica", func() bool { return h.pool.Ready() == 1 })
	b := h.pool.Backends()[0]
	pid := h.set.Status().Replicas[0].PID
	b.Acquire() // a request that never finishes
	defer b.Release(0)
	if err := h.set.Scale(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the replica to be stopped despite the request", func() bool { return !alive(pid) })
	if len(h.logs.lines("still busy at stop_timeout", "in_flight=1")) != 1 {
		t.Errorf("stop_timeout not logged:\n%s", h.logs)
	}
}

func TestSIGKILLAfterGraceForAChildIgnoringSIGTERM(t *testing.T) {
	// The shell ignores SIGTERM and keeps a child of its own: both must go.
	dir := t.TempDir()
	script := `trap "" TERM; "$SIM" sim --addr 127.0.0.1:{port} & sleep 3600 & echo $! > "$DIR/sleep.pid"; while :; do sleep 0.1; done`
	cfg := processConfig([]string{"sh", "-c", script}, 1)
	cfg.Env = map[string]string{"SIM": sluiceBin(t), "DIR": dir}
	h := start(t, "stubborn", cfg, replicas.Options{KillGrace: 500 * time.Millisecond})
	waitFor(t, 20*time.Second, "a ready replica", func() bool { return h.pool.Ready() == 1 })
	shell := h.set.Status().Replicas[0].PID
	raw, err := os.ReadFile(filepath.Join(dir, "sleep.pid"))
	if err != nil {
		t.Fatal(err)
	}
	sleeper, _ := strconv.Atoi(strings.TrimSpace(string(raw)))

	if err := h.set.Scale(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the shell to be killed", func() bool { return !alive(shell) })
	waitFor(t, 5*time.Second, "the shell's child to be killed with its group", func() bool { return !alive(sleeper) })
	if len(h.logs.lines("did not exit after SIGTERM; sending SIGKILL", "replica=stubborn-1")) != 1 {
		t.Errorf("no SIGKILL escalation logged:\n%s", h.logs)
	}
}

func TestWellBehavedReplicaExitsOnSIGTERM(t *testing.T) {
	h := start(t, "polite", processConfig(simCommand(), 1), replicas.Options{KillGrace: time.Minute})
	waitFor(t, 20*time.Second, "a ready replica", func() bool { return h.pool.Ready() == 1 })
	pid := h.set.Status().Replicas[0].PID
	if err := h.set.Scale(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	// The grace is a minute: exiting within the test's wait means SIGTERM
	// did it.
	waitFor(t, 15*time.Second, "the sim to exit on SIGTERM", func() bool { return !alive(pid) })
	waitFor(t, 5*time.Second, "the sim's shutdown log", func() bool { return len(h.logs.lines("sim stopped", "replica=polite-1")) == 1 })
	if len(h.logs.lines("SIGKILL")) != 0 {
		t.Errorf("SIGKILL used on a replica that exits on SIGTERM:\n%s", h.logs)
	}
}

func TestOutputIsLoggedWithTheReplicaID(t *testing.T) {
	script := `echo "hello from {id}"; echo "warning on stderr" >&2; head -c 100000 /dev/zero | tr '\0' x; echo; echo after-long-line; exec "$SIM" sim --addr 127.0.0.1:{port}`
	cfg := processConfig([]string{"sh", "-c", script}, 1)
	cfg.Env = map[string]string{"SIM": sluiceBin(t)}
	h := start(t, "talk", cfg, replicas.Options{})
	waitFor(t, 20*time.Second, "a ready replica", func() bool { return h.pool.Ready() == 1 })
	waitFor(t, 5*time.Second, "output lines", func() bool { return len(h.logs.lines("msg=after-long-line")) == 1 })

	for _, want := range [][]string{
		{`msg="hello from talk-1"`, "pool=talk", "replica=talk-1", "stream=stdout"},
		{`msg="warning on stderr"`, "replica=talk-1", "stream=stderr"},
		{"sim listening", "replica=talk-1", "stream=stderr"},
		{"[truncated]", "replica=talk-1"},
	} {
		if len(h.logs.lines(want...)) != 1 {
			t.Errorf("no log line with %q", want)
		}
	}
	for _, l := range h.logs.lines("[truncated]") {
		if len(l) > 5000 {
			t.Errorf("a %d-byte log line; replica lines must be bounded", len(l))
		}
	}
}

func TestTakenPortIsRetriedAtOnce(t *testing.T) {
	// The first start binds a port that is already taken, as if another
	// process grabbed the one sluice chose; later starts use {port}.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	script := `if [ ! -e "$DIR/once" ]; then touch "$DIR/once"; exec "$SIM" sim --addr "$TAKEN"; fi; exec "$SIM" sim --addr 127.0.0.1:{port}`
	cfg := processConfig([]string{"sh", "-c", script}, 1)
	cfg.Env = map[string]string{"SIM": sluiceBin(t), "DIR": dir, "TAKEN": ln.Addr().String()}
	// A backoff of a minute would outlast the test: only an immediate
	// retry makes the replica ready in time.
	h := start(t, "race", cfg, replicas.Options{RestartBackoff: time.Minute})
	waitFor(t, 20*time.Second, "a ready replica", func() bool { return h.pool.Ready() == 1 })
	if st := h.set.Status(); st.Restarts != 0 {
		t.Errorf("restarts %d, want a port retry not to count", st.Restarts)
	}
	if len(h.logs.lines("port was taken")) != 1 {
		t.Errorf("port retry not logged:\n%s", h.logs)
	}
}

func TestScaleUpAndDownByIndex(t *testing.T) {
	h := start(t, "ids", processConfig(simCommand(), 1), replicas.Options{})
	waitFor(t, 20*time.Second, "1 ready", func() bool { return h.pool.Ready() == 1 })
	ctx := context.Background()
	if err := h.set.Scale(ctx, 3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "3 ready", func() bool { return h.pool.Ready() == 3 })
	if err := h.set.Scale(ctx, 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "2 replicas", func() bool { return len(h.set.Status().Replicas) == 2 })
	// Idle replicas tie on load: the highest id goes, so ids stay compact.
	st := h.set.Status()
	if st.Replicas[0].ID != "ids-1" || st.Replicas[1].ID != "ids-2" {
		t.Errorf("replicas %+v, want ids-1 and ids-2", st.Replicas)
	}
	if err := h.set.Scale(ctx, -1); err == nil {
		t.Error("Scale(-1) accepted")
	}
}

func TestCloseWithExpiredContextKillsAtOnce(t *testing.T) {
	cfg := processConfig(simCommand(), 1)
	cfg.StopTimeout = config.Duration(time.Hour)
	pool, err := newPool("hurry")
	if err != nil {
		t.Fatal(err)
	}
	set, err := replicas.NewProcessSet("hurry", cfg, pool, replicas.Options{Executable: sluiceBin(t), KillGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- set.Run(context.Background()) }()
	waitFor(t, 20*time.Second, "a ready replica", func() bool { return pool.Ready() == 1 })
	pid := set.Status().Replicas[0].PID
	pool.Backends()[0].Acquire() // would hold the drain for an hour

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := set.Close(ctx); err != context.DeadlineExceeded {
		t.Errorf("Close = %v, want the context's deadline error", err)
	}
	if alive(pid) {
		t.Error("replica alive after Close returned")
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := set.Scale(context.Background(), 1); err != replicas.ErrClosed {
		t.Errorf("Scale after Close = %v, want ErrClosed", err)
	}
	if len(pool.Backends()) != 0 {
		t.Errorf("%d backends left in the pool", len(pool.Backends()))
	}
}

func TestRunContextCancelStopsReplicas(t *testing.T) {
	pool, err := newPool("cancel")
	if err != nil {
		t.Fatal(err)
	}
	set, err := replicas.NewProcessSet("cancel", processConfig(simCommand(), 2), pool, replicas.Options{Executable: sluiceBin(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	waitFor(t, 20*time.Second, "2 ready", func() bool { return pool.Ready() == 2 })
	var pids []int
	for _, r := range set.Status().Replicas {
		pids = append(pids, r.PID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("replica %d alive after Run returned", pid)
		}
	}
	if err := set.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
}

func TestUnknownCommandFailsEarly(t *testing.T) {
	pool, err := newPool("missing")
	if err != nil {
		t.Fatal(err)
	}
	_, err = replicas.NewProcessSet("missing", processConfig([]string{"sluice-no-such-program", "--port", "{port}"}, 1), pool, replicas.Options{})
	if err == nil || !strings.Contains(err.Error(), "sluice-no-such-program") {
		t.Errorf("err = %v, want one naming the missing program", err)
	}
}

// TestNoOrphansWhenSluiceIsKilled starts this test binary as a stand-in for
// sluice running two replicas, kills it with SIGKILL (no cleanup runs), and
// checks the replicas die with it.
func TestNoOrphansWhenSluiceIsKilled(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "SLUICE_BIN="+sluiceBin(t))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var pids []int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		if pid, ok := strings.CutPrefix(sc.Text(), "pid "); ok {
			n, _ := strconv.Atoi(pid)
			pids = append(pids, n)
		}
	}
	t.Cleanup(func() { // if the test fails, leave no sim behind
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if len(pids) != 2 {
		t.Fatalf("child reported pids %v, want 2", pids)
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("replica %d not running before the kill", pid)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for _, pid := range pids {
		waitFor(t, 5*time.Second, "replica "+strconv.Itoa(pid)+" to die with its parent", func() bool { return !alive(pid) })
	}
}

func TestReconfigureRollsToANewCommand(t *testing.T) {
	cfg := processConfig([]string{"sluice", "sim", "--addr", "127.0.0.1:{port}", "--id", "v1-{id}"}, 2)
	h := start(t, "roll", cfg, replicas.Options{})
	waitFor(t, 20*time.Second, "2 ready", func() bool { return h.pool.Ready() == 2 })
	instances := func() map[string]bool {
		out := map[string]bool{}
		for _, b := range backendsIn(h.pool, upstream.StateHealthy) {
			resp, err := http.Get(b.Key() + "/health")
			if err != nil {
				continue
			}
			resp.Body.Close()
			out[resp.Header.Get("X-Sim-Instance")] = true
		}
		return out
	}

	// Only timeouts change: the same processes keep running.
	before := h.set.Status()
	same := *cfg
	same.StopTimeout = config.Duration(5 * time.Second)
	if err := h.set.Reconfigure(&same); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for i, r := range h.set.Status().Replicas {
		if r.PID != before.Replicas[i].PID {
			t.Fatalf("a timeout change restarted %s", r.ID)
		}
	}

	// A new command: watch that the pool never has fewer than 2 ready.
	var minReady atomic.Int64
	minReady.Store(2)
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(h.pool.Ready()); n < minReady.Load() {
				minReady.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	})
	next := *cfg
	next.Command = []string{"sluice", "sim", "--addr", "127.0.0.1:{port}", "--id", "v2-{id}"}
	if err := h.set.Reconfigure(&next); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "only v2 replicas", func() bool {
		in := instances()
		st := h.set.Status()
		return len(st.Replicas) == 2 && st.Ready == 2 && len(in) == 2 && !in["v1-roll-1"] && !in["v1-roll-2"]
	})
	close(stop)
	watch.Wait()
	if n := minReady.Load(); n < 2 {
		t.Errorf("ready replicas dipped to %d during the roll, want never below 2", n)
	}
	for _, b := range h.pool.Backends() {
		if b.State() != upstream.StateHealthy {
			t.Errorf("backend %s left in state %s", b.Key(), b.State())
		}
	}

	// A command that never becomes ready: the v2 replicas keep serving.
	broken := *cfg
	broken.Command = []string{"sluice", "sim", "--addr", "127.0.0.1:{port}", "--startup-delay", "1h"}
	broken.StartTimeout = config.Duration(300 * time.Millisecond)
	if err := h.set.Reconfigure(&broken); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a failed start of the broken command", func() bool { return h.set.Status().Restarts >= 1 })
	if in := instances(); len(in) != 2 || h.pool.Ready() != 2 {
		t.Errorf("serving %v (%d ready), want the 2 v2 replicas still", in, h.pool.Ready())
	}

	missing := *cfg
	missing.Command = []string{"sluice-no-such-program", "{port}"}
	if err := h.set.Reconfigure(&missing); err == nil {
		t.Error("Reconfigure to a missing program: no error")
	}
}

// metricOf finds the one series of family name whose label key is value
// (any series when key is empty) in reg, as a collector testutil can read.
func metricOf(t *testing.T, reg *prometheus.Registry, name, key, value string) prometheus.Collector {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := key == ""
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == key && l.GetValue() == value)
			}
			if match {
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "copy"})
				g.Set(v)
				return g
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, key, value)
	return nil
}
