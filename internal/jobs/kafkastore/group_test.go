package kafkastore_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestMoreGatewaysThanPartitions runs four gateways on topics of one
// partition each (three partitions for four members): one gateway owns
// none, and every job still runs exactly once, without the idle member
// holding anything up.
func TestMoreGatewaysThanPartitions(t *testing.T) {
	open := newNamespace(startKafka(t), redistest.Start(t).URL(), 1)(t)
	var mu sync.Mutex
	calls := map[string]int{}
	exec := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j, _ := jobs.FromContext(r.Context())
		mu.Lock()
		calls[j.ID]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	})
	var svcs []*jobs.Service
	var stores []jobstest.Store
	for range 4 {
		store := open(t, 10*time.Second)
		stores = append(stores, store)
		svc, err := jobs.New(context.Background(), jobs.Options{Store: store, Exec: exec, Concurrency: 4, Logger: jobstest.TestLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			svc.Close(ctx)
		})
		svcs = append(svcs, svc)
	}
	var ids []string
	for i := range 60 {
		j, err := svcs[i%4].Submit(context.Background(), jobs.SubmitRequest{
			Tenant: "t", Pool: "chat", Method: http.MethodPost, Path: "/v1/embeddings", Body: []byte(`{}`),
			Priority: jobs.Priorities[i%3],
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	store := stores[0]
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range ids {
		for {
			j, err := store.Get(context.Background(), "t", id)
			if err != nil {
				t.Fatal(err)
			}
			if j.Status == jobs.StatusSucceeded {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s is %s after 60s", id, j.Status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if calls[id] != 1 {
			t.Errorf("job %s ran %d times, want once", id, calls[id])
		}
	}
}
