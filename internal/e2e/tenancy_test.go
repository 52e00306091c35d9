package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// startRedis runs a private redis-server on a free port for the test.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not installed (make test installs it): %v", err)
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "redis://" + addr + "/0"
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGlobalRateLimitAcrossGateways runs three gateway processes sharing one
// Redis and sends a burst of 1,000 requests from one tenant with rpm 100
// across all three. The limit is a GCRA (a token bucket of 100 that refills
// one request every 600ms, as OpenAI's limits refill): the burst gets
// exactly the bucket, 100, plus one per 600ms the burst itself lasted —
// never more, whichever gateway a request hits.
func TestGlobalRateLimitAcrossGateways(t *testing.T) {
	redisURL := startRedis(t)
	s := startSim(t, "s", "--ttft", "0s", "--itl", "0s")
	cfg := `listen: LISTEN
admin: {listen: ADMIN}
log: {level: warn}
redis: {url: "` + redisURL + `"}
auth:
  keys:
    - {name: team-a, key: "secret-a", limits: {rpm: 100}}
pools:
  - name: chat
    models: [sim-llm]
    health_check: {path: ""}
    backends:
` + backendsYAML(s)
	gws := []*gateway{startGateway(t, cfg), startGateway(t, cfg), startGateway(t, cfg)}

	var (
		mu     sync.Mutex
		counts = map[int]int{}
		bad    []string
	)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	began := time.Now()
	for i := range 1000 {
		g := gws[i%3]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(context.Background(), "POST", g.url+"/v1/chat/completions",
				strings.NewReader(`{"model":"sim-llm","messages":[{"role":"user","content":"x"}],"max_tokens":1}`))
			req.Header.Set("Authorization", "Bearer secret-a")
			resp, err := client.Do(req)
			if err != nil {
				mu.Lock()
				bad = append(bad, err.Error())
				mu.Unlock()
				return
			}
			resp.Body.Close()
			mu.Lock()
			counts[resp.StatusCode]++
			if resp.StatusCode == 429 && (resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-Ratelimit-Limit-Requests") != "100") {
				bad = append(bad, fmt.Sprintf("429 headers %v", resp.Header))
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	if len(bad) > 0 {
		t.Fatalf("%d bad answers, e.g. %s", len(bad), bad[0])
	}
	refilled := int(elapsed / (600 * time.Millisecond))
	if counts[200] < 100 || counts[200] > 100+refilled || counts[200]+counts[429] != 1000 {
		t.Fatalf("statuses %v over %v: want 100 admitted (+%d refilled at most), the rest 429", counts, elapsed, refilled)
	}
	t.Logf("burst of 1000 over %v: %d admitted (bucket 100 + %d refilled), %d refused", elapsed.Round(time.Millisecond), counts[200], counts[200]-100, counts[429])
}
