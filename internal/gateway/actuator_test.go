package gateway

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestActuatorPoolScalesForEveryGateway: three gateways share a Redis and
// an actuator pool whose replicas sluice does not run. Each carries two
// requests; one gateway holds the lease and runs the actuator command (a
// script that records its calls), sized for the six requests of all three,
// not its own two. When it stops, another takes the lease over.
func TestActuatorPoolScalesForEveryGateway(t *testing.T) {
	rd := redistest.Start(t)
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "scale.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $2\" >> "+calls+"\necho scaled $1 to $2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	defer free()
	b := newBackend(t, "asg")
	b.setHandler(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	})
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
redis: {url: %s}
pools:
  - name: asg
    models: [m1]
    backends: [{url: %s}]
    autoscale:
      min: 1
      max: 10
      target_concurrency: 1
      stable_window: 2s
      panic_window: 1s
      actuator: {command: [%s, "{pool}", "{replicas}"]}
`, rd.URL(), b.URL, script)
	gws := []*gw{startGateway(t, cfg), startGateway(t, cfg), startGateway(t, cfg)}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer free()
	for _, g := range gws {
		for range 2 {
			wg.Go(func() {
				resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
				if err == nil {
					resp.Body.Close()
				}
			})
		}
	}
	lastCall := func() int {
		data, _ := os.ReadFile(calls)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		f := strings.Fields(lines[len(lines)-1])
		if len(f) != 2 || f[0] != "asg" {
			return 0
		}
		n, _ := strconv.Atoi(f[1])
		return n
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				data, _ := os.ReadFile(calls)
				t.Fatalf("timed out waiting for %s; actuator calls:\n%s", what, data)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("the actuator sized for the three gateways' six requests", func() bool { return lastCall() >= 6 })
	if n := lastCall(); n > 10 {
		t.Fatalf("actuator asked for %d replicas, above max 10", n)
	}
	stopped := -1
	leaders := func() (out []int) {
		for i, g := range gws {
			if i == stopped {
				continue
			}
			for _, p := range g.pools() {
				if p.Actuator != nil && p.Actuator.Leading {
					out = append(out, i)
				}
			}
		}
		return out
	}
	waitFor("one leading gateway", func() bool { return len(leaders()) == 1 })
	first := leaders()[0]
	free() // the stopped gateway drains its requests first
	stopped = first
	if err := gws[first].stop(); err != nil {
		t.Fatal(err)
	}
	waitFor("another gateway leading", func() bool { l := leaders(); return len(l) == 1 && l[0] != first })
}
