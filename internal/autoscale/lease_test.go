package autoscale

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestRedisLeaseOneLeader: three gateways compete for one pool's lease on a
// real redis-server; one leads, and when it stops another takes over.
func TestRedisLeaseOneLeader(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	key := redistest.UniquePrefix(t) + "lease:chat"
	ids := []string{"gw-a", "gw-b", "gw-c"}
	var mu sync.Mutex
	leading := map[string]bool{}
	current := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for id, on := range leading {
			if on {
				out = append(out, id)
			}
		}
		return out
	}
	cancels := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	for _, id := range ids {
		l, err := NewRedisLease(rdb, key, LeaseOptions{ID: id, TTL: 600 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancels[id] = cancel
		wg.Go(func() {
			_ = l.Run(ctx, func(ctx context.Context) {
				mu.Lock()
				leading[id] = true
				mu.Unlock()
				<-ctx.Done()
				mu.Lock()
				leading[id] = false
				mu.Unlock()
			})
		})
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	}()
	waitLeader := func(not string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if now := current(); len(now) == 1 && now[0] != not && rdb.Get(t.Context(), key).Val() == now[0] {
				return now[0]
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no single leader: leading %v, key holds %q", current(), rdb.Get(t.Context(), key).Val())
		return ""
	}
	first := waitLeader("")
	cancels[first]()
	second := waitLeader(first)
	if second == first {
		t.Fatalf("the lease stayed with %s after it stopped", first)
	}
}

func TestRedisLeaseNeedsIdentity(t *testing.T) {
	if _, err := NewRedisLease(nil, "k", LeaseOptions{ID: "a"}); err == nil {
		t.Fatal("a lease without Redis was accepted")
	}
}
