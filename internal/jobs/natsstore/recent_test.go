package natsstore_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

// TestDeliveryOfAJobChangedElsewhere: a gateway hands its dispatcher the
// record it wrote at submission instead of reading it back; when another
// gateway changed the record meanwhile (a cancel), the dispatcher's
// compare-and-set on it fails and a fresh read shows the change.
func TestDeliveryOfAJobChangedElsewhere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := natsstore.StartEmbedded(ctx, t.TempDir(), jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	open := newNamespace(e.Connect)(t)
	a, b := open(t, time.Minute), open(t, time.Minute)

	id, err := jobs.NewID()
	if err != nil {
		t.Fatal(err)
	}
	job := &jobs.Job{ID: id, Tenant: "t", Pool: "chat", Priority: jobs.PriorityNormal, Status: jobs.StatusQueued,
		CreatedAt: time.Now(), Request: jobs.Request{Method: http.MethodPost, Path: "/v1/chat/completions", Body: []byte(`{}`)}}
	if _, _, err := a.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	other, err := b.Get(ctx, "t", id)
	if err != nil {
		t.Fatal(err)
	}
	other.CancelRequested = true
	if err := b.Update(ctx, other); err != nil {
		t.Fatal(err)
	}

	var ds []*jobs.Delivery
	for len(ds) == 0 && ctx.Err() == nil {
		if ds, err = a.Fetch(ctx, jobs.PriorityNormal, 1); err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			time.Sleep(5 * time.Millisecond) // the message is on its way to the consumer
		}
	}
	if len(ds) != 1 || ds[0].Job == nil || ds[0].Job.ID != id {
		t.Fatalf("fetched %v", ds)
	}
	got := ds[0].Job
	if got.CancelRequested && got.Revision == other.Revision {
		t.Skip("the delivery carried the fresh record; nothing stale to check")
	}
	got.Status = jobs.StatusRunning
	if err := a.Update(ctx, got); !errors.Is(err, jobs.ErrConflict) {
		t.Fatalf("update of a stale delivery: %v, want ErrConflict", err)
	}
	fresh, err := a.Get(ctx, "t", id)
	if err != nil {
		t.Fatal(err)
	}
	if !fresh.CancelRequested || fresh.Status != jobs.StatusQueued {
		t.Fatalf("fresh record %+v, want queued with a cancel requested", fresh)
	}
	if err := a.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
}
