package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestJobsSurviveGatewayKill submits hundreds of jobs, kills the gateway
// with kill -9 while some run and most wait, starts it again on the same
// data_dir, and checks that every accepted job reaches a final state with
// its result.
func TestJobsSurviveGatewayKill(t *testing.T) {
	s := startSim(t, "s", "--ttft", "2ms", "--itl", "2ms", "--max-running", "4")
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := `data_dir: ` + dataDir + `
listen: LISTEN
admin: {listen: ADMIN}
log: {level: warn}
jobs: {concurrency: 4}
pools:
  - name: chat
    models: [sim-llm]
    health_check: {path: ""}
    backends:
` + backendsYAML(s)
	g := startGateway(t, cfg)

	const n = 300
	ids := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			body := fmt.Sprintf(`{"model":"sim-llm","messages":[{"role":"user","content":"job %d"}],"max_tokens":20}`, i)
			req, _ := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Prefer", "respond-async")
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			var j struct{ ID string }
			if err := json.NewDecoder(resp.Body).Decode(&j); err != nil || resp.StatusCode != 202 {
				t.Errorf("submit %d: %d %v", i, resp.StatusCode, err)
				return
			}
			ids[i] = j.ID
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	g.signal(syscall.SIGKILL)
	<-g.done

	// The same config (so the same data_dir) on new ports.
	g2 := startGateway(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	succeeded := 0
	for _, id := range ids {
		for {
			req, _ := http.NewRequestWithContext(ctx, "GET", g2.url+"/v1/jobs/"+id+"?wait=30s", nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("job %s: %v", id, err)
			}
			var j struct {
				Status string
				Result *struct {
					StatusCode int `json:"status_code"`
				}
			}
			err = json.NewDecoder(resp.Body).Decode(&j)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("job %s: %d %v", id, resp.StatusCode, err)
			}
			if j.Status == "queued" || j.Status == "running" {
				continue
			}
			if j.Status != "succeeded" || j.Result == nil || j.Result.StatusCode != 200 {
				t.Fatalf("job %s ended %s with %+v", id, j.Status, j.Result)
			}
			succeeded++
			break
		}
	}
	t.Logf("%d jobs accepted, gateway killed, all %d succeeded after restart", n, succeeded)
	_ = os.RemoveAll(dataDir)
}
