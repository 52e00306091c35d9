package jobstest

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// writeLog is a Store that records the statuses its Update wrote and
// whether each delivery it handed out was a first one.
type writeLog struct {
	Store

	// writing is read-held across each Update, so of waits for writes in
	// flight: a reader can see a record in the store before its Update
	// returns and is logged.
	writing sync.RWMutex
	mu      sync.Mutex
	written map[string][]jobs.Status // by job ID
	first   map[string]bool          // job ID → its last delivery was a first one
}

func logWrites(s Store) *writeLog {
	return &writeLog{Store: s, written: make(map[string][]jobs.Status), first: make(map[string]bool)}
}

func (w *writeLog) Update(ctx context.Context, j *jobs.Job) error {
	w.writing.RLock()
	defer w.writing.RUnlock()
	err := w.Store.Update(ctx, j)
	if err == nil {
		w.mu.Lock()
		w.written[j.ID] = append(w.written[j.ID], j.Status)
		w.mu.Unlock()
	}
	return err
}

func (w *writeLog) Fetch(ctx context.Context, p jobs.Priority, max int) ([]*jobs.Delivery, error) {
	ds, err := w.Store.Fetch(ctx, p, max)
	w.mu.Lock()
	for _, d := range ds {
		if d.Job != nil {
			w.first[d.Job.ID] = d.FirstDelivery
		}
	}
	w.mu.Unlock()
	return ds, err
}

func (w *writeLog) of(id string) ([]jobs.Status, bool) {
	w.writing.Lock()
	defer w.writing.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]jobs.Status(nil), w.written[id]...), w.first[id]
}

// testRunningWrittenLate: an attempt of a first delivery that ends at once
// writes only its outcome; one that runs on shows running with its
// attempt counted. A store that cannot tell a first delivery gets the
// running record written at once.
func testRunningWrittenLate(t *testing.T, open Open) {
	release := make(chan struct{})
	up := newUpstream(func(w http.ResponseWriter, r *http.Request, j *jobs.Job, _ int) {
		if strings.Contains(string(j.Request.Body), `"hold":true`) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	})
	store := logWrites(open(t, normalLease))
	e := start(t, store, up)

	quick := e.submit("a", chat(nil), nil)
	if done := e.await("a", quick.ID); done.Status != "succeeded" || done.Attempts != 1 {
		t.Fatalf("quick job %+v", done)
	}
	written, first := store.of(quick.ID)
	want := []jobs.Status{jobs.StatusSucceeded}
	if !first {
		want = []jobs.Status{jobs.StatusRunning, jobs.StatusSucceeded}
	}
	if !slices.Equal(written, want) {
		t.Fatalf("quick job (first delivery %v) wrote %v, want %v", first, written, want)
	}

	held := e.submit("a", chat(map[string]any{"body": map[string]any{"model": "sim", "hold": true}}), nil)
	up.waitStarted(t, held.ID)
	eventually(t, "the held job's record to say running", func() bool {
		j, _ := e.get("a", held.ID)
		return j.Status == "running" && j.Attempts == 1 && j.StartedAt != nil
	}, nil)
	close(release)
	if done := e.await("a", held.ID); done.Status != "succeeded" || done.Attempts != 1 {
		t.Fatalf("held job %+v", done)
	}
	if written, _ := store.of(held.ID); !slices.Equal(written, []jobs.Status{jobs.StatusRunning, jobs.StatusSucceeded}) {
		t.Fatalf("held job wrote %v, want running then succeeded", written)
	}
}

// testCancelFromAnotherGateway: a job canceled through one gateway while it
// runs on another stops there, ends canceled, and leaves the queue at once
// rather than when the runner's lease lapses, whether or not its record
// said running yet.
func testCancelFromAnotherGateway(t *testing.T, open Open) {
	cancelFromAnotherGateway(t, open, func(s Store) Store { return s })
}

// deaf is a Store whose gateway hears no cancel announcements.
type deaf struct{ Store }

func (d deaf) Subscribe(ctx context.Context, fn func(jobs.Event)) error {
	return d.Store.Subscribe(ctx, func(ev jobs.Event) {
		if ev.Kind != jobs.EventCancel {
			fn(ev)
		}
	})
}

// testCancelWithoutAnnouncement: a gateway that missed a cancel's
// announcement (a subscription being set up again) still stops the
// attempt, from the record, when it next extends the lease.
func testCancelWithoutAnnouncement(t *testing.T, open Open) {
	cancelFromAnotherGateway(t, open, func(s Store) Store { return deaf{s} })
}

func cancelFromAnotherGateway(t *testing.T, open Open, wrap func(Store) Store) {
	// Both gateways run jobs; the cancel goes through the one that does
	// not run this one.
	stopped := make(chan error, 2)
	block := func(w http.ResponseWriter, r *http.Request, _ *jobs.Job, _ int) {
		<-r.Context().Done()
		stopped <- r.Context().Err()
		w.WriteHeader(http.StatusBadGateway)
	}
	upA, upB := newUpstream(block), newUpstream(block)
	a := start(t, wrap(open(t, normalLease)), upA)
	b := start(t, wrap(open(t, normalLease)), upB)
	j := a.submit("a", chat(nil), nil)
	other, runner := b, a
	select {
	case <-upA.started:
	case <-upB.started:
		other, runner = a, b
	case <-time.After(waitLimit):
		t.Fatal("the job never started")
	}
	w := other.call(http.MethodDelete, "/v1/jobs/"+j.ID, "a", nil, nil)
	if w.Code != http.StatusOK && w.Code != http.StatusAccepted {
		t.Fatalf("cancel through the other gateway: %d %s", w.Code, w.Body.String())
	}
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the attempt ended with %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the attempt was not stopped")
	}
	if done := runner.await("a", j.ID); done.Status != "canceled" || done.Result != nil || done.Attempts > 1 {
		t.Fatalf("job after cancel: %+v", done)
	}
	// Acked by A, not left for its lease (10 s) to lapse.
	deadline := time.Now().Add(normalLease / 2)
	for {
		c, err := runner.svc.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c.Jobs[jobs.StatusQueued]+c.Jobs[jobs.StatusRunning] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the canceled job's queue entry is still there: %+v", c.Jobs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := upA.callsOf(j.ID) + upB.callsOf(j.ID); n != 1 {
		t.Fatalf("the job ran %d times", n)
	}
}
