package jobstest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// Run runs the conformance suite; each test gets a fresh namespace.
func Run(t *testing.T, newNamespace NewNamespace) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"StoreCompareAndSet", testStoreCompareAndSet},
		{"StoreIdempotentCreate", testStoreIdempotentCreate},
		{"StoreTenantIsolation", testStoreTenantIsolation},
		{"StoreAnnounces", testStoreAnnounces},
		{"SubmitGetList", testSubmitGetList},
		{"SubmitRefused", testSubmitRefused},
		{"Idempotency", testIdempotency},
		{"PriorityOrder", testPriorityOrder},
		{"LowPriorityNotStarved", testNoStarvation},
		{"CancelQueued", testCancelQueued},
		{"CancelRunning", testCancelRunning},
		{"RetryThenSuccess", testRetryThenSuccess},
		{"ClientErrorFailsAtOnce", testClientErrorFails},
		{"MaxAttempts", testMaxAttempts},
		{"ResponseTooLarge", testResponseTooLarge},
		{"LargeBodies", testLargeBodies},
		{"Retention", testRetention},
		{"Webhook", testWebhook},
		{"WebhookGivenUp", testWebhookGivenUp},
		{"Accept", testAccept},
		{"LongPoll", testLongPoll},
		{"Stats", testStats},
		{"SharedStoreRunsEachJobOnce", testSharedOnce},
		{"LeaseExpiryHandsJobOver", testLeaseExpiry},
		{"CloseHandsRunningJobsBack", testCloseHandsBack},
		{"RunningWrittenLate", testRunningWrittenLate},
		{"CancelWithoutAnnouncement", testCancelWithoutAnnouncement},
		{"CancelFromAnotherGateway", testCancelFromAnotherGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newNamespace(t))
		})
	}
}

func newJob(t *testing.T, tenant string, mod func(*jobs.Job)) *jobs.Job {
	t.Helper()
	id, err := jobs.NewID()
	if err != nil {
		t.Fatal(err)
	}
	j := &jobs.Job{
		ID:        id,
		Tenant:    tenant,
		Pool:      "chat",
		Priority:  jobs.PriorityNormal,
		Status:    jobs.StatusQueued,
		CreatedAt: time.Now(),
		Request:   jobs.Request{Method: "POST", Path: "/v1/embeddings", Body: []byte(`{"model":"sim"}`)},
	}
	if mod != nil {
		mod(j)
	}
	return j
}

func testStoreCompareAndSet(t *testing.T, open Open) {
	ctx := context.Background()
	s := open(t, normalLease)
	created, ok, err := s.Create(ctx, newJob(t, "a", nil))
	if err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	j1, err := s.Get(ctx, "a", created.ID)
	if err != nil {
		t.Fatal(err)
	}
	j2, err := s.Get(ctx, "a", created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(j1.Request.Body) != `{"model":"sim"}` || j1.Request.Path != "/v1/embeddings" {
		t.Fatalf("stored request %q %q", j1.Request.Path, j1.Request.Body)
	}
	j1.Status, j1.RunID = jobs.StatusRunning, "r1"
	if err := s.Update(ctx, j1); err != nil {
		t.Fatalf("first update: %v", err)
	}
	j2.Status, j2.RunID = jobs.StatusRunning, "r2"
	if err := s.Update(ctx, j2); !errors.Is(err, jobs.ErrConflict) {
		t.Fatalf("stale update: got %v, want ErrConflict", err)
	}
	j1.Status = jobs.StatusSucceeded
	j1.FinishedAt = time.Now()
	j1.Result = &jobs.Result{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"ok":true}`)}
	if err := s.Update(ctx, j1); err != nil {
		t.Fatalf("second update with fresh revision: %v", err)
	}
	got, err := s.Get(ctx, "a", created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != jobs.StatusSucceeded || got.RunID != "r1" || got.Result == nil || string(got.Result.Body) != `{"ok":true}` {
		t.Fatalf("stored %+v", got)
	}
	if got.Revision != j1.Revision {
		t.Fatalf("revision %d, want %d", got.Revision, j1.Revision)
	}
}

func testStoreIdempotentCreate(t *testing.T, open Open) {
	ctx := context.Background()
	s := open(t, normalLease)
	first, ok, err := s.Create(ctx, newJob(t, "a", func(j *jobs.Job) { j.IdempotencyKey = "k" }))
	if err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	again, ok, err := s.Create(ctx, newJob(t, "a", func(j *jobs.Job) { j.IdempotencyKey = "k" }))
	if err != nil || ok || again.ID != first.ID {
		t.Fatalf("replay: created=%v id=%s err=%v, want %s", ok, again.ID, err, first.ID)
	}
	other, ok, err := s.Create(ctx, newJob(t, "b", func(j *jobs.Job) { j.IdempotencyKey = "k" }))
	if err != nil || !ok || other.ID == first.ID {
		t.Fatalf("other tenant: created=%v id=%s err=%v", ok, other.ID, err)
	}
	// Exactly one queue entry per created job. Fetch does not wait, and a
	// broker may hand over what it has in more than one fetch (Kafka's
	// partitions), so fetch until both came, then once more for none.
	var ids []string
	deadline := time.Now().Add(10 * time.Second)
	for len(ids) < 2 && time.Now().Before(deadline) {
		ds, err := s.Fetch(ctx, jobs.PriorityNormal, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			ids = append(ids, d.Job.ID)
			if err := s.Ack(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		if len(ds) == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	ds, err := s.Fetch(ctx, jobs.PriorityNormal, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		ids = append(ids, d.Job.ID)
	}
	slices.Sort(ids)
	want := []string{first.ID, other.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("queued %v, want %v", ids, want)
	}
}

func testStoreTenantIsolation(t *testing.T, open Open) {
	ctx := context.Background()
	s := open(t, normalLease)
	j, _, err := s.Create(ctx, newJob(t, "a", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "b", j.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("other tenant's get: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "a", "job_00000000000000000000000000000000"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("unknown id: %v, want ErrNotFound", err)
	}
	list, _, err := s.List(ctx, jobs.ListQuery{Tenant: "b", Limit: 10})
	if err != nil || len(list) != 0 {
		t.Fatalf("other tenant's list: %v %v", list, err)
	}
}

func testStoreAnnounces(t *testing.T, open Open) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, listener := open(t, normalLease), open(t, normalLease)
	events := make(chan jobs.Event, 16)
	subscribed := make(chan error, 1)
	go func() { subscribed <- listener.Subscribe(ctx, func(ev jobs.Event) { events <- ev }) }()
	next := func(kind jobs.EventKind) jobs.Event {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.Kind == kind {
					return ev
				}
			case <-time.After(waitLimit):
				t.Fatalf("no %s event", kind)
			}
		}
	}
	// The subscription may start after the first publication: publish
	// until one arrives.
	eventually(t, "the subscription", func() bool {
		select {
		case ev := <-events:
			return ev.Kind == jobs.EventCancel
		default:
			_ = s.Publish(ctx, jobs.Event{Kind: jobs.EventCancel, ID: "job_x"})
			return false
		}
	}, nil)
	j, _, err := s.Create(ctx, newJob(t, "a", func(j *jobs.Job) { j.Priority = jobs.PriorityHigh }))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(jobs.EventEnqueued); ev.ID != j.ID || ev.Priority != jobs.PriorityHigh {
		t.Fatalf("enqueued event %+v", ev)
	}
	j.Status, j.FinishedAt = jobs.StatusCanceled, time.Now()
	if err := s.Update(ctx, j); err != nil {
		t.Fatal(err)
	}
	if ev := next(jobs.EventFinished); ev.ID != j.ID {
		t.Fatalf("finished event %+v", ev)
	}
	cancel()
	if err := <-subscribed; err != nil {
		t.Fatalf("Subscribe after its context ended: %v", err)
	}
}

func testSubmitGetList(t *testing.T, open Open) {
	up := newUpstream(nil)
	e := start(t, open(t, normalLease), up)
	a1 := e.submit("a", chat(nil), map[string]string{"X-Request-ID": "req-1", "Authorization": "Bearer secret"})
	a2 := e.submit("a", chat(nil), nil)
	b1 := e.submit("b", chat(nil), nil)
	if a1.Status != "queued" || a1.Attempts != 0 || a1.CreatedAt == nil || a1.Result != nil {
		t.Fatalf("submitted job %+v", a1)
	}
	for _, c := range []struct{ tenant, id string }{{"a", a1.ID}, {"a", a2.ID}, {"b", b1.ID}} {
		j := e.await(c.tenant, c.id)
		if j.Status != "succeeded" || j.Attempts != 1 || j.Error != nil || j.StartedAt == nil || j.FinishedAt == nil {
			t.Fatalf("finished job %+v", j)
		}
		if j.Result == nil || j.Result.StatusCode != 200 || j.Result.Headers["content-type"] != "application/json" {
			t.Fatalf("result %+v", j.Result)
		}
		var body struct{ Job string }
		if err := json.Unmarshal(j.Result.Body, &body); err != nil || body.Job != c.id {
			t.Fatalf("result body %s is not the job's own JSON (%v)", j.Result.Body, err)
		}
	}

	// The exact shape of SPEC section 6.
	w := e.call(http.MethodGet, "/v1/jobs/"+a1.ID, "a", nil, nil)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range raw {
			if !yield(k) {
				return
			}
		}
	})
	want := []string{"attempts", "created_at", "error", "finished_at", "id", "result", "started_at", "status"}
	if !slices.Equal(keys, want) {
		t.Fatalf("job keys %v, want %v", keys, want)
	}

	// What the gateway sees.
	seen, seenBody := up.attempt(a1.ID)
	if seen.Tenant != "a" || seen.Pool != "chat" || seen.Priority != jobs.PriorityNormal {
		t.Fatalf("attempt context: tenant %q pool %q priority %q", seen.Tenant, seen.Pool, seen.Priority)
	}
	if got := seen.Request.Header.Get("X-Request-Id"); got != "req-1" {
		t.Fatalf("X-Request-ID %q, want req-1", got)
	}
	if seen.Request.Header.Get("Authorization") != "" {
		t.Fatal("credentials were stored with the job")
	}
	if !strings.Contains(string(seenBody), `"model":"sim"`) {
		t.Fatalf("attempt body %q", seenBody)
	}

	// A tenant never sees another tenant's job.
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		if w := e.call(m, "/v1/jobs/"+a1.ID, "b", nil, nil); w.Code != http.StatusNotFound {
			t.Fatalf("%s of another tenant's job: %d", m, w.Code)
		}
	}

	type page struct {
		Data    []job  `json:"data"`
		HasMore bool   `json:"has_more"`
		LastID  string `json:"last_id"`
	}
	list := func(tenant string, q map[string]string) page {
		w := e.call(http.MethodGet, "/v1/jobs?"+query(q), tenant, nil, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("list: %d %s", w.Code, w.Body.String())
		}
		return decode[page](t, w)
	}
	ids := func(p page) []string {
		var out []string
		for _, j := range p.Data {
			out = append(out, j.ID)
		}
		return out
	}
	if got := ids(list("a", nil)); !slices.Equal(got, []string{a2.ID, a1.ID}) {
		t.Fatalf("tenant a lists %v, want newest first %v", got, []string{a2.ID, a1.ID})
	}
	if got := ids(list("b", nil)); !slices.Equal(got, []string{b1.ID}) {
		t.Fatalf("tenant b lists %v", got)
	}
	if got := ids(list("a", map[string]string{"status": "queued"})); len(got) != 0 {
		t.Fatalf("no queued jobs expected, got %v", got)
	}
	p := list("a", map[string]string{"status": "succeeded", "limit": "1"})
	if got := ids(p); !slices.Equal(got, []string{a2.ID}) || !p.HasMore || p.LastID != a2.ID {
		t.Fatalf("first page %v more=%v last=%s", got, p.HasMore, p.LastID)
	}
	p = list("a", map[string]string{"limit": "1", "after": p.LastID})
	if got := ids(p); !slices.Equal(got, []string{a1.ID}) || p.HasMore {
		t.Fatalf("second page %v more=%v", got, p.HasMore)
	}
	if w := e.call(http.MethodGet, "/v1/jobs?status=done", "a", nil, nil); w.Code != http.StatusBadRequest {
		t.Fatalf("bad status filter: %d", w.Code)
	}
}

func testSubmitRefused(t *testing.T, open Open) {
	e := start(t, open(t, normalLease), newUpstream(nil), func(o *jobs.Options) { o.MaxRequestBody = 4 << 10 })
	tests := []struct {
		name string
		body []byte
		code int
	}{
		{"malformed", []byte(`{"path":`), http.StatusBadRequest},
		{"unknown field", []byte(`{"path":"/v1/chat/completions","body":{},"bogus":1}`), http.StatusBadRequest},
		{"bad request JSON", []byte(`{"path":"/v1/chat/completions","body":"not json"}`), http.StatusBadRequest},
		{"unknown model", chat(map[string]any{"body": map[string]any{"model": "nope"}}), http.StatusNotFound},
		{"too large", chat(map[string]any{"body": map[string]any{"model": "sim", "pad": strings.Repeat("x", 8<<10)}}), http.StatusRequestEntityTooLarge},
		{"jobs of jobs", chat(map[string]any{"path": "/v1/jobs"}), http.StatusBadRequest},
		{"bad priority", chat(map[string]any{"priority": "urgent"}), http.StatusBadRequest},
		{"callback without secret", chat(map[string]any{"callback_url": "http://127.0.0.1:1/hook"}), http.StatusBadRequest},
		{"no path", []byte(`{"body":{"model":"sim"}}`), http.StatusBadRequest},
	}
	for _, tc := range tests {
		w := e.call(http.MethodPost, "/v1/jobs", "a", tc.body, nil)
		if w.Code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body.String(), tc.code)
			continue
		}
		var oe struct {
			Error struct{ Message, Type, Code string } `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &oe); err != nil || oe.Error.Message == "" || oe.Error.Type == "" {
			t.Errorf("%s: not an OpenAI error: %s", tc.name, w.Body.String())
		}
	}
	w := e.call(http.MethodGet, "/v1/jobs", "a", nil, nil)
	if n := len(decode[struct{ Data []job }](t, w).Data); n != 0 {
		t.Fatalf("%d jobs were created by refused submissions", n)
	}
	if w := e.call(http.MethodPut, "/v1/jobs", "a", nil, nil); w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("PUT /v1/jobs: %d", w.Code)
	}
	if w := e.call(http.MethodGet, "/v1/jobs/../../etc", "a", nil, nil); w.Code != http.StatusNotFound {
		t.Fatalf("bad id: %d", w.Code)
	}
}

func testIdempotency(t *testing.T, open Open) {
	up := newUpstream(nil)
	e := start(t, open(t, normalLease), up)
	key := map[string]string{"Idempotency-Key": "order-42"}
	first := e.submit("a", chat(nil), key)
	w := e.call(http.MethodPost, "/v1/jobs", "a", chat(nil), key)
	if w.Code != http.StatusAccepted || w.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d replayed=%q", w.Code, w.Header().Get("Idempotent-Replayed"))
	}
	if again := decode[job](t, w); again.ID != first.ID {
		t.Fatalf("replay returned %s, want %s", again.ID, first.ID)
	}
	if other := e.submit("b", chat(nil), key); other.ID == first.ID {
		t.Fatal("another tenant's key returned the same job")
	}

	// Concurrent submissions with one key make one job.
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := e.call(http.MethodPost, "/v1/jobs", "a", chat(nil), map[string]string{"Idempotency-Key": "race"})
			if w.Code == http.StatusAccepted {
				var j job
				_ = json.Unmarshal(w.Body.Bytes(), &j)
				got[i] = j.ID
			}
		}()
	}
	wg.Wait()
	for _, id := range got {
		if id == "" || id != got[0] {
			t.Fatalf("concurrent submissions returned %v", got)
		}
	}
	e.await("a", first.ID)
	e.await("a", got[0])
	if n := up.callsOf(got[0]); n != 1 {
		t.Fatalf("idempotent job ran %d times", n)
	}
}

// settle lets just-submitted jobs become visible to fetches. A store may
// make a job fetchable a moment after Create returned (JetStream signals
// its consumers asynchronously); the order tests then see every job
// waiting, so that priority alone decides.
func settle() { time.Sleep(100 * time.Millisecond) }

// blockFirst holds the first attempt until release is closed and echoes
// the others.
func blockFirst(release <-chan struct{}) func(http.ResponseWriter, *http.Request, *jobs.Job, int) {
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request, j *jobs.Job, n int) {
		first := false
		once.Do(func() { first = true })
		if first {
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"job":%q}`, j.ID)
	}
}

func testPriorityOrder(t *testing.T, open Open) {
	release := make(chan struct{})
	up := newUpstream(blockFirst(release))
	e := start(t, open(t, normalLease), up, func(o *jobs.Options) { o.Concurrency = 1 })
	blocker := e.submit("a", chat(nil), nil)
	up.waitStarted(t, blocker.ID)
	var want []string
	byPrio := map[string][]string{}
	for _, p := range []string{"low", "low", "normal", "normal", "high", "high"} {
		j := e.submit("a", chat(map[string]any{"priority": p}), nil)
		byPrio[p] = append(byPrio[p], j.ID)
	}
	want = append(append(append(want, byPrio["high"]...), byPrio["normal"]...), byPrio["low"]...)
	settle()
	close(release)
	for _, id := range want {
		e.await("a", id)
	}
	if got := up.orderAfter(1); !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v (high, normal, low; FIFO within each)", got, want)
	}
}

func testNoStarvation(t *testing.T, open Open) {
	release := make(chan struct{})
	up := newUpstream(blockFirst(release))
	e := start(t, open(t, normalLease), up, func(o *jobs.Options) { o.Concurrency = 1 })
	blocker := e.submit("a", chat(nil), nil)
	up.waitStarted(t, blocker.ID)
	low := e.submit("a", chat(map[string]any{"priority": "low"}), nil)
	var all []string
	for range 12 {
		all = append(all, e.submit("a", chat(map[string]any{"priority": "high"}), nil).ID)
	}
	settle()
	close(release)
	for _, id := range append(all, low.ID) {
		e.await("a", id)
	}
	// The blocker (normal) passed low over once; then 7 high jobs more.
	order := up.orderAfter(1)
	if i := slices.Index(order, low.ID); i != 7 {
		t.Fatalf("low job ran at position %d of %v, want 7: after 8 passes it gets a turn", i, order)
	}
}

func testCancelQueued(t *testing.T, open Open) {
	release := make(chan struct{})
	up := newUpstream(blockFirst(release))
	e := start(t, open(t, normalLease), up, func(o *jobs.Options) { o.Concurrency = 1 })
	blocker := e.submit("a", chat(nil), nil)
	up.waitStarted(t, blocker.ID)
	victim := e.submit("a", chat(nil), nil)
	w := e.call(http.MethodDelete, "/v1/jobs/"+victim.ID, "a", nil, nil)
	if w.Code != http.StatusOK {
		t.Fatalf("cancel: %d %s", w.Code, w.Body.String())
	}
	if j := decode[job](t, w); j.Status != "canceled" || j.FinishedAt == nil || j.Attempts != 0 {
		t.Fatalf("canceled job %+v", j)
	}
	if w := e.call(http.MethodDelete, "/v1/jobs/"+victim.ID, "a", nil, nil); w.Code != http.StatusOK {
		t.Fatalf("second cancel: %d", w.Code)
	}
	after := e.submit("a", chat(nil), nil)
	close(release)
	e.await("a", after.ID) // FIFO: the canceled job's entry was taken before
	if n := up.callsOf(victim.ID); n != 0 {
		t.Fatalf("canceled job ran %d times", n)
	}
	if j, _ := e.get("a", victim.ID); j.Status != "canceled" {
		t.Fatalf("canceled job is now %s", j.Status)
	}
	if w := e.call(http.MethodDelete, "/v1/jobs/"+after.ID, "a", nil, nil); w.Code != http.StatusConflict {
		t.Fatalf("cancel of a succeeded job: %d, want 409", w.Code)
	}
}

func testCancelRunning(t *testing.T, open Open) {
	upstreamErr := make(chan error, 1)
	up := newUpstream(func(w http.ResponseWriter, r *http.Request, _ *jobs.Job, _ int) {
		<-r.Context().Done()
		upstreamErr <- r.Context().Err()
		w.WriteHeader(http.StatusBadGateway)
	})
	e := start(t, open(t, normalLease), up)
	j := e.submit("a", chat(nil), nil)
	up.waitStarted(t, j.ID)
	w := e.call(http.MethodDelete, "/v1/jobs/"+j.ID, "a", nil, nil)
	if w.Code != http.StatusOK {
		t.Fatalf("cancel running job: %d %s", w.Code, w.Body.String())
	}
	if got := decode[job](t, w); got.Status != "canceled" || got.Attempts != 1 || got.Result != nil {
		t.Fatalf("canceled job %+v", got)
	}
	select {
	case err := <-upstreamErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("upstream context ended with %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the upstream request was not cancelled")
	}
	// Counted right after the record, which the DELETE may see first.
	eventually(t, "the canceled attempt to be counted", func() bool {
		return e.counter("sluice_job_attempts_total", "result", "canceled") == 1
	}, nil)
}

func testRetryThenSuccess(t *testing.T, open Open) {
	up := newUpstream(func(w http.ResponseWriter, _ *http.Request, j *jobs.Job, n int) {
		if n < 3 {
			http.Error(w, "no capacity", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"attempt":%d}`, n)
	})
	e := start(t, open(t, normalLease), up)
	j := e.await("a", e.submit("a", chat(nil), nil).ID)
	if j.Status != "succeeded" || j.Attempts != 3 || j.Error != nil {
		t.Fatalf("job %+v", j)
	}
	if string(j.Result.Body) != `{"attempt":3}` {
		t.Fatalf("result %s, want the third attempt's", j.Result.Body)
	}
	eventually(t, "2 retried attempts counted", func() bool {
		return e.counter("sluice_job_attempts_total", "result", "retried") == 2 &&
			e.counter("sluice_job_attempts_total", "result", "succeeded") == 1
	}, nil)
}

func testClientErrorFails(t *testing.T, open Open) {
	up := newUpstream(func(w http.ResponseWriter, _ *http.Request, _ *jobs.Job, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"bad","type":"invalid_request_error","code":"x"}}`)
	})
	e := start(t, open(t, normalLease), up)
	id := e.submit("a", chat(nil), nil).ID
	j := e.await("a", id)
	if j.Status != "failed" || j.Attempts != 1 || j.Error == nil || !strings.Contains(*j.Error, "400") {
		t.Fatalf("job %+v", j)
	}
	if j.Result == nil || j.Result.StatusCode != 400 || !strings.Contains(string(j.Result.Body), `"bad"`) {
		t.Fatalf("result %+v", j.Result)
	}
	if up.callsOf(id) != 1 {
		t.Fatalf("a 400 was retried")
	}
}

func testMaxAttempts(t *testing.T, open Open) {
	up := newUpstream(func(w http.ResponseWriter, _ *http.Request, _ *jobs.Job, _ int) {
		http.Error(w, "down", http.StatusBadGateway)
	})
	e := start(t, open(t, normalLease), up, func(o *jobs.Options) { o.MaxAttempts = 3 })
	id := e.submit("a", chat(nil), nil).ID
	j := e.await("a", id)
	if j.Status != "failed" || j.Attempts != 3 || j.Error == nil || !strings.Contains(*j.Error, "after 3 attempts") {
		t.Fatalf("job %+v", j)
	}
	if j.Result == nil || j.Result.StatusCode != 502 {
		t.Fatalf("result of the last attempt: %+v", j.Result)
	}
	if n := up.callsOf(id); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
}

func testResponseTooLarge(t *testing.T, open Open) {
	up := newUpstream(func(w http.ResponseWriter, _ *http.Request, _ *jobs.Job, _ int) {
		for range 8 {
			if _, err := w.Write(make([]byte, 512)); err != nil {
				return
			}
		}
	})
	e := start(t, open(t, normalLease), up, func(o *jobs.Options) { o.MaxResponseBody = 1 << 10 })
	id := e.submit("a", chat(nil), nil).ID
	j := e.await("a", id)
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "exceeds 1024 bytes") {
		t.Fatalf("job %+v", j)
	}
	if up.callsOf(id) != 1 {
		t.Fatal("a response too large was retried")
	}
}

func testLargeBodies(t *testing.T, open Open) {
	up := newUpstream(func(w http.ResponseWriter, r *http.Request, j *jobs.Job, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(j.Request.Body)
	})
	e := start(t, open(t, normalLease), up)
	pad := strings.Repeat("0123456789abcdef", 40<<10) // 640 KiB
	id := e.submit("a", chat(map[string]any{"body": map[string]any{"model": "sim", "pad": pad}}), nil).ID
	j := e.await("a", id)
	var body struct{ Pad string }
	if err := json.Unmarshal(j.Result.Body, &body); err != nil || body.Pad != pad {
		t.Fatalf("large result did not round-trip (%d bytes, %v)", len(j.Result.Body), err)
	}
}

func testRetention(t *testing.T, open Open) {
	// Large bodies, so that stores that keep them apart delete them too.
	echo := newUpstream(func(w http.ResponseWriter, _ *http.Request, j *jobs.Job, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(j.Request.Body)
	})
	e := start(t, open(t, normalLease), echo, func(o *jobs.Options) { o.Retention = time.Hour })
	key := map[string]string{"Idempotency-Key": "daily"}
	large := map[string]any{"body": map[string]any{"model": "sim", "pad": strings.Repeat("x", 300<<10)}}
	j := e.submit("a", chat(large), key)
	e.await("a", j.ID)
	e.clock.Advance(30 * time.Minute)
	if _, code := e.get("a", j.ID); code != http.StatusOK {
		t.Fatalf("job gone before its retention: %d", code)
	}
	e.clock.Advance(31 * time.Minute)
	eventually(t, "the janitor to delete the job", func() bool {
		_, code := e.get("a", j.ID)
		return code == http.StatusNotFound
	}, func() { e.clock.Advance(time.Minute) })
	w := e.call(http.MethodPost, "/v1/jobs", "a", chat(nil), key)
	if w.Code != http.StatusAccepted || w.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("resubmission after retention: %d replayed=%q", w.Code, w.Header().Get("Idempotent-Replayed"))
	}
	if decode[job](t, w).ID == j.ID {
		t.Fatal("the expired job's idempotency key still held")
	}
}

// delivery is a callback as a receiver got it.
type delivery struct {
	header http.Header
	body   []byte
}

func testWebhook(t *testing.T, open Open) {
	key := make([]byte, 32)
	rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	var mu sync.Mutex
	var got []delivery
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, delivery{r.Header.Clone(), body})
		n := len(got)
		mu.Unlock()
		if n == 1 {
			http.Error(w, "not now", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	e := start(t, open(t, normalLease), newUpstream(nil), func(o *jobs.Options) { o.WebhookSecret = secret })
	id := e.submit("a", chat(map[string]any{"callback_url": receiver.URL + "/hook"}), nil).ID
	e.await("a", id)
	eventually(t, "the callback to be retried after a 500", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 2
	}, nil)
	mu.Lock()
	defer mu.Unlock()
	for i, d := range got {
		msgID, ts := d.header.Get("Webhook-Id"), d.header.Get("Webhook-Timestamp")
		if msgID != id {
			t.Errorf("delivery %d: webhook-id %q, want the job id", i, msgID)
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || sec != e.clock.Now().Unix() {
			t.Errorf("delivery %d: webhook-timestamp %q, want %d", i, ts, e.clock.Now().Unix())
		}
		if !verifyStandardWebhook(key, msgID, ts, d.body, d.header.Get("Webhook-Signature")) {
			t.Errorf("delivery %d: signature %q does not verify", i, d.header.Get("Webhook-Signature"))
		}
		var payload struct {
			Type string `json:"type"`
			Data job    `json:"data"`
		}
		if err := json.Unmarshal(d.body, &payload); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		if payload.Type != "job.succeeded" || payload.Data.ID != id || payload.Data.Result == nil || payload.Data.Result.StatusCode != 200 {
			t.Errorf("delivery %d: payload %s", i, d.body)
		}
	}
	tampered := append(slices.Clone(got[0].body), ' ')
	if verifyStandardWebhook(key, id, got[0].header.Get("Webhook-Timestamp"), tampered, got[0].header.Get("Webhook-Signature")) {
		t.Error("a tampered body verified")
	}
}

func testWebhookGivenUp(t *testing.T, open Open) {
	var calls atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer receiver.Close()
	e := start(t, open(t, normalLease), newUpstream(func(w http.ResponseWriter, _ *http.Request, _ *jobs.Job, _ int) {
		http.Error(w, "bad", http.StatusBadRequest)
	}), func(o *jobs.Options) {
		o.WebhookSecret = "a raw secret"
		o.CallbackAttempts = 3
	})
	id := e.submit("a", chat(map[string]any{"callback_url": receiver.URL}), nil).ID
	if j := e.await("a", id); j.Status != "failed" {
		t.Fatalf("job %+v", j)
	}
	eventually(t, "the callback to be given up", func() bool {
		return e.counter("sluice_webhook_deliveries_total", "result", "failed") == 1
	}, nil)
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d deliveries, want 3", n)
	}
	if got := e.counter("sluice_webhook_deliveries_total", "result", "retried"); got != 2 {
		t.Fatalf("%v retried deliveries, want 2", got)
	}
}

// verifyStandardWebhook checks a signature the way the Standard Webhooks
// spec tells receivers to: HMAC-SHA256 with the secret's key over
// "id.timestamp.body", base64, compared with each "v1," signature listed.
func verifyStandardWebhook(key []byte, id, ts string, body []byte, header string) bool {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(header) {
		version, b64, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

func testAccept(t *testing.T, open Open) {
	e := start(t, open(t, normalLease), newUpstream(nil))
	req := jobs.SubmitRequest{
		Tenant: "a", Pool: "chat", Path: "/v1/chat/completions?x=1", Host: "api.example.com",
		Header:         http.Header{"Content-Type": {"application/json"}},
		Body:           []byte(`{"model":"sim"}`),
		Priority:       jobs.PriorityHigh,
		IdempotencyKey: "once",
	}
	accept := func(req jobs.SubmitRequest) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		e.svc.Accept(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil), req)
		return w
	}
	w := accept(req)
	if w.Code != http.StatusAccepted || w.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("accept: %d %s", w.Code, w.Body.String())
	}
	j := decode[job](t, w)
	if w.Header().Get("Location") != "/v1/jobs/"+j.ID || j.Status != "queued" {
		t.Fatalf("accepted %+v at %q", j, w.Header().Get("Location"))
	}
	if w := accept(req); w.Code != http.StatusAccepted || w.Header().Get("Idempotent-Replayed") != "true" || decode[job](t, w).ID != j.ID {
		t.Fatalf("replay: %d %q %s", w.Code, w.Header().Get("Idempotent-Replayed"), w.Body.String())
	}
	if done := e.await("a", j.ID); done.Status != "succeeded" {
		t.Fatalf("job %+v", done)
	}
	bad := req
	bad.Priority, bad.IdempotencyKey = "urgent", ""
	if w := accept(bad); w.Code != http.StatusBadRequest {
		t.Fatalf("bad priority: %d", w.Code)
	}
	got, err := e.svc.Submit(context.Background(), jobs.SubmitRequest{Tenant: "a", Path: "/v1/models", Method: http.MethodGet})
	if err != nil || got.Request.Method != http.MethodGet || got.Request.Path != "/v1/models" {
		t.Fatalf("Submit: %+v %v", got, err)
	}
}

func testLongPoll(t *testing.T, open Open) {
	release, hold := make(chan struct{}), make(chan struct{})
	defer close(hold)
	up := newUpstream(func(w http.ResponseWriter, _ *http.Request, j *jobs.Job, _ int) {
		if strings.Contains(string(j.Request.Body), `"hold":true`) {
			<-hold
		} else {
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"done":true}`)
	})
	e := start(t, open(t, normalLease), up)
	longGet := func(id, wait string) <-chan job {
		out := make(chan job, 1)
		go func() {
			w := e.call(http.MethodGet, "/v1/jobs/"+id+"?wait="+wait, "a", nil, nil)
			var got job
			_ = json.Unmarshal(w.Body.Bytes(), &got)
			out <- got
		}()
		return out
	}

	j := e.submit("a", chat(nil), nil)
	up.waitStarted(t, j.ID)
	done := longGet(j.ID, "60s")
	select {
	case got := <-done:
		t.Fatalf("long poll returned %q before the job finished", got.Status)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case got := <-done:
		if got.Status != "succeeded" || got.Result == nil {
			t.Fatalf("long poll returned %+v", got)
		}
	case <-time.After(waitLimit):
		t.Fatal("long poll did not wake when the job finished")
	}

	// A wait that ends first returns the job as it is.
	held := e.submit("a", chat(map[string]any{"body": map[string]any{"model": "sim", "hold": true}}), nil)
	up.waitStarted(t, held.ID)
	// The record says running once the attempt has run a moment
	// (jobs.runningWriteDelay, real time).
	eventually(t, "the held job's record to say running", func() bool {
		j, _ := e.get("a", held.ID)
		return j.Status == "running"
	}, nil)
	timedOut := longGet(held.ID, "10s")
	var got job
	eventually(t, "the long poll to time out", func() bool {
		select {
		case got = <-timedOut:
			return true
		default:
			return false
		}
	}, func() { e.clock.Advance(time.Second) })
	if got.Status != "running" {
		t.Fatalf("timed-out long poll returned %q, want running", got.Status)
	}
	if w := e.call(http.MethodGet, "/v1/jobs/"+j.ID+"?wait=-1s", "a", nil, nil); w.Code != http.StatusBadRequest {
		t.Fatalf("negative wait: %d", w.Code)
	}
}

func testStats(t *testing.T, open Open) {
	release := make(chan struct{})
	var once sync.Once
	up := newUpstream(func(w http.ResponseWriter, _ *http.Request, j *jobs.Job, _ int) {
		if strings.Contains(string(j.Request.Body), `"fail":true`) {
			http.Error(w, "bad", http.StatusUnprocessableEntity)
			return
		}
		once.Do(func() { <-release })
		io.WriteString(w, "ok")
	})
	e := start(t, open(t, normalLease), up, func(o *jobs.Options) { o.Concurrency = 1 })
	blocker := e.submit("a", chat(nil), nil)
	up.waitStarted(t, blocker.ID)
	var ids []string
	for range 3 {
		ids = append(ids, e.submit("a", chat(nil), nil).ID)
	}
	ids = append(ids, e.submit("a", chat(map[string]any{"body": map[string]any{"model": "big", "fail": true}}), nil).ID)
	st, err := e.svc.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingByPool["chat"] != 3 || st.PendingByPool["batch"] != 1 || st.InFlight != 1 || st.Concurrency != 1 {
		t.Fatalf("stats while busy: %+v", st)
	}
	if p := e.svc.PendingByPool(); p["chat"] != 3 || p["batch"] != 1 {
		t.Fatalf("PendingByPool %v", p)
	}
	if g := e.counter("sluice_jobs_pending", "pool", "chat"); g != 3 {
		t.Fatalf("sluice_jobs_pending{pool=chat} %v", g)
	}
	close(release)
	for _, id := range append(ids, blocker.ID) {
		e.await("a", id)
	}
	eventually(t, "final counts", func() bool {
		st, err = e.svc.Stats(context.Background())
		return err == nil && st.Jobs[jobs.StatusSucceeded] == 4 && st.Jobs[jobs.StatusFailed] == 1 &&
			st.Jobs[jobs.StatusQueued] == 0 && st.Jobs[jobs.StatusRunning] == 0
	}, nil)
	if len(st.PendingByPool) != 0 || st.RunTime.Count != 5 || st.QueueWait.Count != 5 {
		t.Fatalf("stats when idle: %+v", st)
	}
	if g := e.counter("sluice_jobs", "state", "succeeded"); g != 4 {
		t.Fatalf("sluice_jobs{state=succeeded} %v", g)
	}
}

func testSharedOnce(t *testing.T, open Open) {
	up := newUpstream(nil)
	a := start(t, open(t, normalLease), up)
	b := start(t, open(t, normalLease), up)
	var ids []string
	for i := range 40 {
		e := a
		if i%2 == 1 {
			e = b
		}
		ids = append(ids, e.submit("a", chat(nil), nil).ID)
	}
	for i, id := range ids {
		e := b
		if i%3 == 0 {
			e = a
		}
		if j := e.await("a", id); j.Status != "succeeded" || j.Attempts != 1 {
			t.Fatalf("job %+v", j)
		}
	}
	for _, id := range ids {
		if n := up.callsOf(id); n != 1 {
			t.Fatalf("job %s ran %d times, want once", id, n)
		}
	}
}

func testLeaseExpiry(t *testing.T, open Open) {
	storeA := open(t, shortLease)
	upA := newUpstream(func(w http.ResponseWriter, r *http.Request, _ *jobs.Job, _ int) {
		<-r.Context().Done() // never answers: the gateway "dies" meanwhile
	})
	a := start(t, storeA, upA, func(o *jobs.Options) { o.Concurrency = 1 })
	j := a.submit("a", chat(nil), nil)
	upA.waitStarted(t, j.ID)

	upB := newUpstream(func(w http.ResponseWriter, _ *http.Request, job *jobs.Job, _ int) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"by":"B","job":%q}`, job.ID)
	})
	b := start(t, open(t, shortLease), upB)
	// While A renews its lease, B does not take the job.
	time.Sleep(shortLease * 3 / 2)
	if n := upB.callsOf(j.ID); n != 0 {
		t.Fatalf("B ran a job A still holds (%d times)", n)
	}
	if got, _ := b.get("a", j.ID); got.Status != "running" || got.Attempts != 1 {
		t.Fatalf("job while A holds it: %+v", got)
	}
	// A dies: its connection to the store is gone, its leases lapse.
	storeA.Close()
	done := b.await("a", j.ID)
	if done.Status != "succeeded" || done.Attempts != 2 || !strings.Contains(string(done.Result.Body), `"by":"B"`) {
		t.Fatalf("job after takeover: %+v", done)
	}
	// A's attempt ends after B recorded the result: it records nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = a.svc.Close(ctx)
	again, _ := b.get("a", j.ID)
	if again.Status != "succeeded" || string(again.Result.Body) != string(done.Result.Body) || again.Attempts != 2 {
		t.Fatalf("result changed after A stopped: %+v", again)
	}
	if n := upB.callsOf(j.ID); n != 1 {
		t.Fatalf("B ran the job %d times", n)
	}
}

func testCloseHandsBack(t *testing.T, open Open) {
	upA := newUpstream(func(w http.ResponseWriter, r *http.Request, _ *jobs.Job, _ int) {
		<-r.Context().Done()
	})
	a := start(t, open(t, normalLease), upA)
	j := a.submit("a", chat(nil), nil)
	upA.waitStarted(t, j.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.svc.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a running job past its deadline: %v", err)
	}
	if got, _ := a.get("a", j.ID); got.Status != "queued" || got.Attempts != 0 {
		t.Fatalf("job handed back as %+v, want queued with no attempt counted", got)
	}
	b := start(t, open(t, normalLease), newUpstream(nil))
	if done := b.await("a", j.ID); done.Status != "succeeded" || done.Attempts != 1 {
		t.Fatalf("job after hand-back: %+v", done)
	}
}
