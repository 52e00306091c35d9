package natsstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

// streamsDir is where the embedded server keeps its streams under dir.
func streamsDir(dir string) string {
	return filepath.Join(dir, "jetstream", "$G", "streams")
}

// truncate cuts the file at path to size bytes (a fraction of it when
// size < 0: -2 keeps half).
func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if size < 0 {
		size = fi.Size() / -size
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	t.Logf("truncated %s from %d to %d bytes", filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path), fi.Size(), size)
}

// gate is an Exec that answers jobs with body "hold" only once released.
type gate struct{ release chan struct{} }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if string(body) == "hold" {
		select {
		case <-g.release:
		case <-r.Context().Done():
			return
		}
	}
	fmt.Fprintf(w, "done %s", body)
}

func openDamaged(t *testing.T, dir string) *natsstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Lease: 5 * time.Second, Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatalf("open the damaged store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func startService(t *testing.T, store jobs.Store, exec http.Handler) *jobs.Service {
	t.Helper()
	svc, err := jobs.New(context.Background(), jobs.Options{Store: store, Exec: exec, Concurrency: 4, RetryBackoff: time.Millisecond, Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Close(ctx)
	})
	return svc
}

// awaitFinal waits until every job is final and returns their states.
func awaitFinal(t *testing.T, store jobs.Store, ids []string) map[jobs.Status]int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		states := map[jobs.Status]int{}
		for _, id := range ids {
			j, err := store.Get(context.Background(), "a", id)
			switch {
			case errors.Is(err, jobs.ErrNotFound):
				states["lost"]++
			case err != nil:
				t.Fatal(err)
			default:
				states[j.Status]++
			}
		}
		if states[jobs.StatusQueued]+states[jobs.StatusRunning] == 0 {
			return states
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs never finish after the damage: %v", states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDamagedConsumerState truncates the consumers' state files of a store
// that had jobs queued and out on lease. The store opens (it did not: the
// gateway exited), and every job runs to completion.
func TestDamagedConsumerState(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	store, err := natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Lease: 5 * time.Second, Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{release: make(chan struct{})}
	svc, err := jobs.New(ctx, jobs.Options{Store: store, Exec: g, Concurrency: 4, Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 12 {
		body := fmt.Sprint(i)
		if i%2 == 0 {
			body = "hold"
		}
		j, err := svc.Submit(ctx, jobs.SubmitRequest{Tenant: "a", Path: "/v1/x", Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	// Let the dispatcher lease what it can, then stop with jobs held.
	time.Sleep(300 * time.Millisecond)
	closeCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	svc.Close(closeCtx)
	cancel()
	store.Close()

	for _, c := range []string{"dispatch_high", "dispatch_normal", "dispatch_low"} {
		truncate(t, filepath.Join(streamsDir(dir), "sluice_jobs_queue", "obs", c, "o.dat"), 3)
	}
	truncate(t, filepath.Join(streamsDir(dir), "sluice_jobs_done", "obs", "janitor", "o.dat"), 1)

	store = openDamaged(t, dir)
	close(g.release)
	startService(t, store, g)
	if states := awaitFinal(t, store, ids); states[jobs.StatusSucceeded] != len(ids) {
		t.Fatalf("after the repair: %v, want all %d succeeded", states, len(ids))
	}
}

// TestDamagedRecords truncates the records bucket of a store whose jobs
// all finished: the latest revisions of some records are lost, so they
// read queued or running again, with no queue entry. Reconciliation
// queues them again and they finish; none stays unfinished.
func TestDamagedRecords(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	store, err := natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Lease: 5 * time.Second, Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// Every job is held until all are submitted, so the records' first
	// revisions come before any final one in the bucket's file, whatever
	// the machine's speed: cutting the file in half leaves records that
	// read unfinished.
	g := &gate{release: make(chan struct{})}
	svc, err := jobs.New(ctx, jobs.Options{Store: store, Exec: g, Concurrency: 4, Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 40 {
		j, err := svc.Submit(ctx, jobs.SubmitRequest{Tenant: "a", Path: "/v1/x", Body: []byte("hold")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	close(g.release)
	if states := awaitFinal(t, store, ids); states[jobs.StatusSucceeded] != len(ids) {
		t.Fatalf("before the damage: %v", states)
	}
	svc.Close(ctx)
	store.Close()

	truncate(t, filepath.Join(streamsDir(dir), "KV_sluice_jobs", "msgs", "1.blk"), -2)

	store = openDamaged(t, dir)
	r, err := store.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Unfinished == 0 {
		t.Fatal("no record went back to an unfinished state: the test did not damage what it meant to")
	}
	t.Logf("after the damage: %d records unfinished, %d queued again by this call (the rest by Open's)", r.Unfinished, len(r.Requeued))
	startService(t, store, g)
	states := awaitFinal(t, store, ids)
	if states[jobs.StatusSucceeded] == 0 {
		t.Fatalf("after the repair: %v", states)
	}
	t.Logf("after the repair: %v", states)
	if r, err := store.Reconcile(ctx); err != nil || r.Unfinished != 0 || len(r.Requeued) != 0 {
		t.Fatalf("a second reconciliation: %+v %v, want nothing left", r, err)
	}
}

// TestStoreUnavailable checks that a store that cannot be opened says so
// with jobs.ErrStoreUnavailable, which the gateway answers by running
// without jobs, and that a configuration mistake does not.
func TestStoreUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	first, err := natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Logger: jobstest.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Logger: jobstest.TestLogger()}); !errors.Is(err, jobs.ErrStoreUnavailable) {
		t.Fatalf("a directory in use: %v, want ErrStoreUnavailable", err)
	}
	file := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(file, nil, 0o644)
	if _, err := natsstore.OpenEmbedded(ctx, file, natsstore.Options{Logger: jobstest.TestLogger()}); !errors.Is(err, jobs.ErrStoreUnavailable) {
		t.Fatalf("a data dir that is a file: %v, want ErrStoreUnavailable", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := natsstore.Dial(ctx, "nats://"+addr, natsstore.Options{Logger: jobstest.TestLogger()}); !errors.Is(err, jobs.ErrStoreUnavailable) {
		t.Fatalf("an unreachable server: %v, want ErrStoreUnavailable", err)
	}
	if _, err := natsstore.OpenEmbedded(ctx, t.TempDir(), natsstore.Options{Name: "a.b"}); err == nil || errors.Is(err, jobs.ErrStoreUnavailable) {
		t.Fatalf("an invalid name: %v, want a configuration error", err)
	}
}
