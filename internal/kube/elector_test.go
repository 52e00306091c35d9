package kube

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// TestElectorOneLeaderAtATime runs three candidates for one Lease on a
// real API server: exactly one leads; when it stops, another takes over
// only after the first one's lead returned; and so on until none is left.
func TestElectorOneLeaderAtATime(t *testing.T) {
	cfg := apiServer(t)
	client := newClient(t, cfg)
	ns := newNamespace(t, client)

	var (
		mu      sync.Mutex
		current string   // who is inside lead now
		terms   []string // who led, in order
		overlap []string
	)
	// Short timings keep the test quick; the order of events, not their
	// timing, is what it checks.
	opts := ElectorOptions{LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}
	type candidate struct {
		e      *Elector
		cancel context.CancelFunc
		done   chan struct{}
	}
	candidates := map[string]*candidate{}
	for _, id := range []string{"gw-a", "gw-b", "gw-c"} {
		e, err := NewElector(client, ns, LeaseName("chat"), id, opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c := &candidate{e: e, cancel: cancel, done: make(chan struct{})}
		candidates[id] = c
		go func() {
			defer close(c.done)
			err := e.Run(ctx, func(leadCtx context.Context) {
				mu.Lock()
				if current != "" {
					overlap = append(overlap, fmt.Sprintf("%s started while %s leads", id, current))
				}
				current = id
				terms = append(terms, id)
				mu.Unlock()
				<-leadCtx.Done()
				time.Sleep(50 * time.Millisecond) // a lead that takes a moment to wind down
				mu.Lock()
				current = ""
				mu.Unlock()
			})
			if err != nil {
				t.Errorf("%s: Run = %v", id, err)
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range candidates {
			c.cancel()
			<-c.done
		}
	})

	leader := func(exclude map[string]bool) string {
		var got string
		eventually(t, "a leader", func() (bool, string) {
			var leading []string
			for id, c := range candidates {
				if c.e.Leading() && !exclude[id] {
					leading = append(leading, id)
				}
			}
			if len(leading) == 1 {
				got = leading[0]
				return true, ""
			}
			return false, fmt.Sprint(leading)
		})
		return got
	}
	stopped := map[string]bool{}
	for range len(candidates) {
		id := leader(stopped)
		for other, c := range candidates {
			if other != id && !stopped[other] {
				eventually(t, other+" sees the leader", func() (bool, string) { return c.e.Leader() == id, c.e.Leader() })
			}
		}
		candidates[id].cancel() // a rollout stops this gateway replica
		<-candidates[id].done
		stopped[id] = true
		if candidates[id].e.Leading() {
			t.Errorf("%s still leading after Run returned", id)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(overlap) > 0 {
		t.Errorf("two leaders at once: %v", overlap)
	}
	if len(terms) != len(candidates) {
		t.Errorf("terms = %v, want each candidate to lead once, in turn", terms)
	}
}

func TestNewElectorRejects(t *testing.T) {
	c := unreachableClient(t)
	if _, err := NewElector(c, "ns", "lease", "", ElectorOptions{}); err == nil {
		t.Error("no identity: nil error")
	}
	if _, err := NewElector(c, "ns", "lease", "id", ElectorOptions{LeaseDuration: time.Second, RenewDeadline: 2 * time.Second}); err == nil {
		t.Error("renew deadline above the lease duration: nil error")
	}
}

func TestLeaseName(t *testing.T) {
	names := map[string]bool{}
	for _, pool := range []string{"chat", "a-b", "a_b", "a__b", "_", "x_y_z"} {
		n := LeaseName(pool)
		if names[n] {
			t.Errorf("LeaseName(%q) = %q, taken by another pool", pool, n)
		}
		names[n] = true
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Errorf("LeaseName(%q) = %q: %v", pool, n, errs)
		}
	}
	if got := LeaseName("chat"); got != "sluice-autoscaler-chat" {
		t.Errorf("LeaseName(chat) = %q", got)
	}
}
