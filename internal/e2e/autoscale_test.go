package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const processPool = `listen: LISTEN
admin: {listen: ADMIN}
log: {level: info}
pools:
  - name: chat
    models: [sim-llm]
    process:
      command: ["sluice", "sim", "--addr", "127.0.0.1:{port}", "--id", "{id}", "--ttft", "5ms", "--itl", "20ms"]
      replicas: REPLICAS
      stop_timeout: 5s
    health_check: {path: /health, interval: 500ms, timeout: 400ms}
    queue: {size: 100, timeout: 30s}
`

type autoscaleStatus struct {
	Replicas struct{ Desired, Ready int }
	Process  *struct {
		Desired, Ready, Starting int
	}
}

func (g *gateway) replicas(t *testing.T) autoscaleStatus {
	t.Helper()
	resp, err := http.Get(g.admin + "/api/pools")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Pools []autoscaleStatus }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Pools[0]
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestScaleFromZeroServesFirstRequest starts a pool with no replicas: the
// first request waits in the queue while the autoscaler starts one, and is
// answered; idle, the pool goes back to zero.
func TestScaleFromZeroServesFirstRequest(t *testing.T) {
	g := startGateway(t, replaceAll(processPool, "REPLICAS", "0")+`    autoscale: {min: 0, max: 2, target_concurrency: 1, stable_window: 2s, panic_window: 1s, scale_down_delay: 1s, scale_to_zero_after: 1s}
`)
	if st := g.replicas(t); st.Process.Desired != 0 || st.Replicas.Ready != 0 {
		t.Fatalf("not at zero at start: %+v", st)
	}
	status, body, err := chat(context.Background(), client, g.url, 4, false)
	if err != nil || status != 200 {
		t.Fatalf("first request from zero: %d %v %s", status, err, body)
	}
	waitFor(t, "scale back to zero", 30*time.Second, func() bool {
		st := g.replicas(t)
		return st.Process.Desired == 0 && st.Replicas.Ready == 0
	})
}

// TestAutoscaleFollowsLoad puts a load step on a pool at one replica: the
// autoscaler adds replicas; when the load stops it removes them after the
// scale-down delay. A replica killed with kill -9 is restarted.
func TestAutoscaleFollowsLoad(t *testing.T) {
	g := startGateway(t, replaceAll(processPool, "REPLICAS", "1")+`    autoscale: {min: 1, max: 3, target_concurrency: 2, stable_window: 3s, panic_window: 1s, scale_down_delay: 2s}
`)
	waitFor(t, "one ready replica", 30*time.Second, func() bool { return g.replicas(t).Replicas.Ready == 1 })

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, _, _ = chat(ctx, client, g.url, 30, false)
			}
		})
	}
	waitFor(t, "3 ready replicas under load", 40*time.Second, func() bool { return g.replicas(t).Replicas.Ready == 3 })
	stop()
	wg.Wait()
	waitFor(t, "scale down to 1 after the load", 40*time.Second, func() bool {
		st := g.replicas(t)
		return st.Process.Desired == 1 && st.Replicas.Ready == 1
	})
}

func replaceAll(s, old, repl string) string { return strings.ReplaceAll(s, old, repl) }
