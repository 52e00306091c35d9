package batch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded NATS server's and client's own background work, and
		// the HTTP keep-alive connections of the test client.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		// nats.go starts this watcher with the first async publish (an
		// object store write); when the connection closes right after,
		// it can read a channel already reset to nil and block forever.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	)
}

// checkExactlyOnce checks that every custom_id req-0 … req-(n-1) is in
// exactly one of the output and error files, and returns the lines by
// custom_id.
func checkExactlyOnce(t *testing.T, n int, output, errs []fileLine) map[string]fileLine {
	t.Helper()
	seen := make(map[string]fileLine, n)
	for _, l := range append(append([]fileLine{}, output...), errs...) {
		if _, dup := seen[l.CustomID]; dup {
			t.Fatalf("custom_id %s appears twice", l.CustomID)
		}
		seen[l.CustomID] = l
	}
	for i := range n {
		if _, ok := seen[fmt.Sprintf("req-%d", i)]; !ok {
			t.Fatalf("custom_id req-%d is in neither file (%d lines in all)", i, len(seen))
		}
	}
	if len(seen) != n {
		t.Fatalf("%d custom_ids in the files, want %d", len(seen), n)
	}
	return seen
}

func TestBatchRunsToCompletion(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testBatchRunsToCompletion(t, gatewayOpts{window: 16}) })
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		testBatchRunsToCompletion(t, gatewayOpts{window: 16, redis: srv})
	})
	t.Run("redis beside a store without storage", func(t *testing.T) {
		testBatchRunsToCompletion(t, gatewayOpts{window: 16, sideRedis: redistest.Start(t)})
	})
}

func TestNeedsStorage(t *testing.T) {
	g := startGateway(t, newSimBackend(t, 0), gatewayOpts{})
	_, err := New(t.Context(), Options{Jobs: g.jobs, Store: opaqueStore{g.store}})
	if err == nil || !strings.Contains(err.Error(), "keeps no files") {
		t.Fatalf("New on a store without storage: %v", err)
	}
}

func testBatchRunsToCompletion(t *testing.T, o gatewayOpts) {
	backend := newSimBackend(t, 0)
	g := startGateway(t, backend, o)
	const n = 60
	// Every 10th line asks for a model the backend refuses.
	content := inputFile(n, "hello", func(i int) string {
		if i%10 == 3 {
			return "bad-request"
		}
		return "sim"
	})
	f := g.mustUpload("team-a", content)
	if f.Object != "file" || f.Purpose != "batch" || f.Bytes != int64(len(content)) || f.Status != "processed" || !strings.HasPrefix(f.ID, "file-") {
		t.Fatalf("file object %+v", f)
	}
	b := g.mustCreate("team-a", f.ID)
	if b.Object != "batch" || b.Status != StatusValidating || b.RequestCounts.Total != n || b.Metadata["purpose"] != "test" ||
		b.ExpiresAt == nil || *b.ExpiresAt-b.CreatedAt != 24*3600 {
		t.Fatalf("created batch %+v", b)
	}
	done := g.await("team-a", b.ID, nil)
	if done.Status != StatusCompleted {
		t.Fatalf("batch ended %s: %+v", done.Status, done.Errors)
	}
	if done.RequestCounts != (requestCounts{Total: n, Completed: n - 6, Failed: 6}) {
		t.Fatalf("request_counts %+v", done.RequestCounts)
	}
	for name, ts := range map[string]*int64{"in_progress_at": done.InProgressAt, "finalizing_at": done.FinalizingAt, "completed_at": done.CompletedAt} {
		if ts == nil {
			t.Errorf("%s is null", name)
		}
	}
	if done.OutputFileID == nil || done.ErrorFileID == nil {
		t.Fatalf("files: output %v, error %v", done.OutputFileID, done.ErrorFileID)
	}
	output := parseFile(t, g.content("team-a", done.OutputFileID))
	errs := parseFile(t, g.content("team-a", done.ErrorFileID))
	lines := checkExactlyOnce(t, n, output, errs)
	if len(output) != n-6 || len(errs) != 6 {
		t.Fatalf("%d output and %d error lines", len(output), len(errs))
	}
	for i := range n {
		l := lines[fmt.Sprintf("req-%d", i)]
		if l.Response == nil || !strings.HasPrefix(l.ID, "batch_req_") || l.Response.RequestID == "" {
			t.Fatalf("line %d: %+v", i, l)
		}
		var body struct {
			Choices []struct {
				Message struct{ Content string }
			}
			Error *struct{ Message string }
		}
		if err := json.Unmarshal(l.Response.Body, &body); err != nil {
			t.Fatalf("line %d body %s: %v", i, l.Response.Body, err)
		}
		if i%10 == 3 {
			if l.Response.StatusCode != http.StatusBadRequest || body.Error == nil || l.Error != nil {
				t.Fatalf("refused line %d: %d %s", i, l.Response.StatusCode, l.Response.Body)
			}
			continue
		}
		if want := fmt.Sprintf("echo: hello-%d", i); l.Response.StatusCode != 200 || len(body.Choices) != 1 || body.Choices[0].Message.Content != want {
			t.Fatalf("line %d: %d %s, want content %q", i, l.Response.StatusCode, l.Response.Body, want)
		}
	}
	// Each line reached the backend once (4xx answers are not retried).
	for i := range n {
		if c := backend.callsFor(fmt.Sprintf("hello-%d", i)); c != 1 {
			t.Fatalf("line %d reached the backend %d times", i, c)
		}
	}

	// The output file is the tenant's, listed with the input.
	code, body := g.do(http.MethodGet, "/v1/files", "team-a", "", nil)
	list := decode[listPage[fileObject]](t, body)
	if code != http.StatusOK || len(list.Data) != 3 || list.Data[0].ID == f.ID {
		t.Fatalf("files: %d %s", code, body)
	}
	code, body = g.do(http.MethodGet, "/v1/files?purpose=batch", "team-a", "", nil)
	if list = decode[listPage[fileObject]](t, body); code != http.StatusOK || len(list.Data) != 1 || list.Data[0].ID != f.ID {
		t.Fatalf("files?purpose=batch: %d %s", code, body)
	}
}

func TestTenantsAreApart(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testTenantsAreApart(t, gatewayOpts{}) })
	t.Run("redis", func(t *testing.T) { testTenantsAreApart(t, gatewayOpts{redis: redistest.Start(t)}) })
}

func testTenantsAreApart(t *testing.T, o gatewayOpts) {
	g := startGateway(t, newSimBackend(t, 0), o)
	f := g.mustUpload("team-a", inputFile(3, "x", sim))
	b := g.mustCreate("team-a", f.ID)
	g.await("team-a", b.ID, nil)
	for _, path := range []string{
		"/v1/files/" + f.ID, "/v1/files/" + f.ID + "/content", "/v1/batches/" + b.ID,
	} {
		if code, body := g.do(http.MethodGet, path, "team-b", "", nil); code != http.StatusNotFound || !bytes.Contains(body, []byte(`"type":"invalid_request_error"`)) {
			t.Errorf("GET %s as another tenant: %d %s", path, code, body)
		}
	}
	if code, _ := g.do(http.MethodDelete, "/v1/files/"+f.ID, "team-b", "", nil); code != http.StatusNotFound {
		t.Errorf("DELETE as another tenant: %d", code)
	}
	if code, _ := g.do(http.MethodPost, "/v1/batches/"+b.ID+"/cancel", "team-b", "", nil); code != http.StatusNotFound {
		t.Errorf("cancel as another tenant: %d", code)
	}
	if code, body := g.createBatch("team-b", f.ID, "/v1/chat/completions"); code != http.StatusBadRequest {
		t.Errorf("batch from another tenant's file: %d %s", code, body)
	}
	for _, path := range []string{"/v1/files", "/v1/batches"} {
		code, body := g.do(http.MethodGet, path, "team-b", "", nil)
		if code != http.StatusOK || !bytes.Contains(body, []byte(`"data":[]`)) {
			t.Errorf("GET %s as another tenant: %d %s", path, code, body)
		}
	}
	// The owner deletes the file; then it is gone.
	if code, body := g.do(http.MethodDelete, "/v1/files/"+f.ID, "team-a", "", nil); code != http.StatusOK || !bytes.Contains(body, []byte(`"deleted":true`)) {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, _ := g.do(http.MethodGet, "/v1/files/"+f.ID+"/content", "team-a", "", nil); code != http.StatusNotFound {
		t.Fatalf("content after delete: %d", code)
	}
}

func TestBatchListPages(t *testing.T) {
	g := startGateway(t, newSimBackend(t, 0), gatewayOpts{})
	f := g.mustUpload("t", inputFile(1, "p", sim))
	var ids []string
	for range 3 {
		ids = append(ids, g.mustCreate("t", f.ID).ID)
	}
	code, body := g.do(http.MethodGet, "/v1/batches?limit=2", "t", "", nil)
	p := decode[listPage[batchObject]](t, body)
	if code != http.StatusOK || len(p.Data) != 2 || !p.HasMore || p.Data[0].ID != ids[2] || p.Data[1].ID != ids[1] {
		t.Fatalf("first page: %d %s", code, body)
	}
	code, body = g.do(http.MethodGet, "/v1/batches?limit=2&after="+*p.LastID, "t", "", nil)
	p = decode[listPage[batchObject]](t, body)
	if code != http.StatusOK || len(p.Data) != 1 || p.HasMore || p.Data[0].ID != ids[0] {
		t.Fatalf("second page: %d %s", code, body)
	}
	if code, _ := g.do(http.MethodGet, "/v1/batches?limit=101", "t", "", nil); code != http.StatusBadRequest {
		t.Fatalf("limit 101: %d", code)
	}
}

func TestBadInput(t *testing.T) {
	g := startGateway(t, newSimBackend(t, 0), gatewayOpts{maxFile: 4 << 10})
	good := string(inputFile(2, "ok", sim))
	line := func(id, url, model string) string {
		return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"model":%q,"messages":[]}}`+"\n", id, url, model)
	}
	for _, tc := range []struct {
		name    string
		purpose string
		content string
		code    int
		want    string
	}{
		{"malformed line", "batch", good + "{\"custom_id\": \"x\", \n", 400, "line 3: not a JSON object"},
		{"duplicate custom_id", "batch", good + line("req-0", "/v1/chat/completions", "sim"), 400, `line 3: custom_id \"req-0\" repeats line 1`},
		{"unknown url", "batch", line("a", "/v1/images/generations", "sim"), 400, `line 1: url \"/v1/images/generations\" is not supported`},
		{"no model", "batch", `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"input":"x"}}`, 400, "line 1: body.model is missing"},
		{"GET line", "batch", `{"custom_id":"a","method":"GET","url":"/v1/embeddings","body":{"model":"sim"}}`, 400, `line 1: method \"GET\": want POST`},
		{"no custom_id", "batch", "\n\n" + `{"method":"POST","url":"/v1/embeddings","body":{"model":"sim"}}`, 400, "line 3: custom_id is missing"},
		{"empty file", "batch", "\n\n", 400, "holds no requests"},
		{"over the size limit", "batch", strings.Repeat(line("z", "/v1/embeddings", "sim"), 100), 413, "exceeds 4096 bytes (jobs.max_file_size)"},
		{"other purpose", "fine-tune", good, 400, `purpose \"fine-tune\" is not supported`},
		{"no purpose", "", good, 400, "purpose field is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := g.upload("t", tc.purpose, []byte(tc.content))
			if code != tc.code || !bytes.Contains(body, []byte(tc.want)) || !bytes.Contains(body, []byte(`"error":{`)) {
				t.Fatalf("upload: %d %s, want %d and %q", code, body, tc.code, tc.want)
			}
		})
	}

	f := g.mustUpload("t", []byte(good+line("c", "/v1/chat/completions", "secret")))
	other := g.mustUpload("t", []byte(line("c", "/v1/chat/completions", "nonexistent")))
	embed := g.mustUpload("t", []byte(line("e", "/v1/embeddings", "sim")))
	for _, tc := range []struct {
		name, tenant, file, endpoint string
		window                       string
		code                         int
		want                         string
	}{
		{"unknown endpoint", "t", f.ID, "/v1/images/generations", "24h", 400, `endpoint \"/v1/images/generations\" is not supported`},
		{"other completion window", "t", f.ID, "/v1/chat/completions", "1h", 400, `only \"24h\" is supported`},
		{"model the tenant may not use", "t", f.ID, "/v1/chat/completions", "24h", 403, `line 3 (custom_id \"c\"): model \"secret\" is not allowed`},
		{"unknown model", "t", other.ID, "/v1/chat/completions", "24h", 404, `line 1 (custom_id \"c\"): model \"nonexistent\" does not exist`},
		{"lines for another endpoint", "t", embed.ID, "/v1/chat/completions", "24h", 400, "line 1: url /v1/embeddings differs from the batch's endpoint"},
		{"missing file", "t", "file-0192f0c4e6a87b3c9d1e2f3a4b5c6d7e", "/v1/chat/completions", "24h", 400, "is not a batch input file of yours"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"input_file_id": tc.file, "endpoint": tc.endpoint, "completion_window": tc.window})
			code, resp := g.do(http.MethodPost, "/v1/batches", tc.tenant, "application/json", body)
			if code != tc.code || !bytes.Contains(resp, []byte(tc.want)) {
				t.Fatalf("create: %d %s, want %d and %q", code, resp, tc.code, tc.want)
			}
		})
	}
	// The tenant allowed the model gets its batch.
	if code, body := g.createBatch("boss", g.mustUpload("boss", []byte(line("c", "/v1/chat/completions", "secret"))).ID, "/v1/chat/completions"); code != http.StatusOK {
		t.Fatalf("allowed tenant: %d %s", code, body)
	}
}

func TestCancel(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testCancel(t, gatewayOpts{window: 4}) })
	t.Run("redis", func(t *testing.T) { testCancel(t, gatewayOpts{window: 4, redis: redistest.Start(t)}) })
}

func testCancel(t *testing.T, o gatewayOpts) {
	backend := newSimBackend(t, 0)
	backend.hold()
	g := startGateway(t, backend, o)
	const n = 40
	f := g.mustUpload("t", inputFile(n, "c", sim))
	b := g.mustCreate("t", f.ID)
	// Wait until the window's lines reach the backend.
	deadline := time.Now().Add(waitLimit)
	for backend.calls.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("lines never reached the backend (%d calls)", backend.calls.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	code, body := g.do(http.MethodPost, "/v1/batches/"+b.ID+"/cancel", "t", "", nil)
	if c := decode[batchObject](t, body); code != http.StatusOK || c.Status != StatusCancelling || c.CancellingAt == nil {
		t.Fatalf("cancel: %d %s", code, body)
	}
	backend.release()
	done := g.await("t", b.ID, nil)
	if done.Status != StatusCancelled || done.CancelledAt == nil {
		t.Fatalf("batch ended %s", done.Status)
	}
	output := parseFile(t, g.content("t", done.OutputFileID))
	errs := parseFile(t, g.content("t", done.ErrorFileID))
	checkExactlyOnce(t, n, output, errs)
	// The requests that were running finished and kept their results; the
	// rest never ran.
	if len(output) != 4 || done.RequestCounts.Completed != 4 || done.RequestCounts.Failed != n-4 {
		t.Fatalf("%d output lines, counts %+v", len(output), done.RequestCounts)
	}
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != "batch_cancelled" || l.Response != nil {
			t.Fatalf("error line %+v", l)
		}
	}
	if calls := backend.calls.Load(); calls != 4 {
		t.Fatalf("the backend got %d requests, want the 4 running at the cancel", calls)
	}
	if code, _ := g.do(http.MethodPost, "/v1/batches/"+b.ID+"/cancel", "t", "", nil); code != http.StatusOK {
		t.Fatalf("cancel again: %d", code)
	}
}

func TestCancelFinishedBatchConflicts(t *testing.T) {
	g := startGateway(t, newSimBackend(t, 0), gatewayOpts{})
	f := g.mustUpload("t", inputFile(2, "f", sim))
	b := g.mustCreate("t", f.ID)
	g.await("t", b.ID, nil)
	code, body := g.do(http.MethodPost, "/v1/batches/"+b.ID+"/cancel", "t", "", nil)
	if code != http.StatusConflict || !bytes.Contains(body, []byte("already completed")) {
		t.Fatalf("cancel a completed batch: %d %s", code, body)
	}
}

func TestExpiry(t *testing.T) {
	backend := newSimBackend(t, 0)
	backend.hold()
	defer backend.release()
	clock := clockwork.NewFakeClockAt(time.Now())
	g := startGateway(t, backend, gatewayOpts{window: 2, clock: clock})
	const n = 10
	b := g.mustCreate("t", g.mustUpload("t", inputFile(n, "e", sim)).ID)
	deadline := time.Now().Add(waitLimit)
	for backend.calls.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("lines never reached the backend")
		}
		time.Sleep(5 * time.Millisecond)
	}
	clock.Advance(completionWindow)
	done := g.await("t", b.ID, func() { clock.Advance(time.Second) })
	if done.Status != StatusExpired || done.ExpiredAt == nil || done.OutputFileID != nil {
		t.Fatalf("batch ended %+v", done)
	}
	errs := parseFile(t, g.content("t", done.ErrorFileID))
	checkExactlyOnce(t, n, nil, errs)
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != "batch_expired" {
			t.Fatalf("error line %+v", l)
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	a, b := idempotencyKey("batch_1", "x"), idempotencyKey("batch_1", "y")
	if a == b || a != idempotencyKey("batch_1", "x") || a == idempotencyKey("batch_2", "x") || len(idempotencyKey("batch_1", strings.Repeat("z", maxCustomID))) > 255 {
		t.Fatalf("keys %q %q", a, b)
	}
}

func TestBitmap(t *testing.T) {
	b := newBitmap(17)
	for _, i := range []int{0, 7, 8, 16} {
		b.set(i)
	}
	for i := range 18 {
		want := i == 0 || i == 7 || i == 8 || i == 16
		if b.has(i) != want {
			t.Errorf("has(%d) = %v", i, b.has(i))
		}
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`))
	f.Add([]byte(`{"custom_id":"","method":"POST"}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":7}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseLine(data)
		if err != nil {
			return
		}
		if req.customID == "" || req.model == "" || !json.Valid(req.body) {
			t.Fatalf("accepted %q as %+v", data, req)
		}
		n, _, err := checkFile(bytes.NewReader(append(data, '\n')), 1<<20)
		if err != nil || n != 1 {
			t.Fatalf("checkFile of an accepted line: %d, %v", n, err)
		}
	})
}

// TestSegmentsMerge commits one line per tick, so that the batch's
// committed segments pass maxSegments and are merged, and checks that the
// record never lists many more, that the output still holds every line
// once, and that no segment blob is left behind.
func TestSegmentsMerge(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Now())
	backend := newSimBackend(t, 0)
	backend.hold()
	defer backend.release()
	g := startGateway(t, backend, gatewayOpts{window: 1, clock: clock})
	const n = maxSegments + 20
	b := g.mustCreate("t", g.mustUpload("t", inputFile(n, "m", sim)).ID)
	// One line at a time: the window is 1 and the backend holds each
	// request until it is let through, so every commit holds exactly one
	// line, and the record is read after each commit.
	seen := make([]int, 0, n)
	for done := 1; done < n; done++ {
		waitFor(t, "a line at the backend", func() bool { return backend.gated.Load() == 1 })
		backend.releaseOne()
		waitFor(t, "the line committed", func() bool {
			clock.Advance(time.Second)
			rec, err := g.batch.st.batch(t.Context(), "t", b.ID)
			if err != nil || rec.Completed < done {
				return false
			}
			seen = append(seen, len(rec.Segments))
			return true
		})
	}
	backend.release()
	done := g.await("t", b.ID, func() { clock.Advance(time.Second) })
	if done.Status != StatusCompleted || done.RequestCounts.Completed != n {
		t.Fatalf("batch ended %s %+v", done.Status, done.RequestCounts)
	}
	// Each commit adds a segment, up to maxSegments+1, when they are merged
	// into one: the record never lists more, and fewer after the merge.
	if most := slices.Max(seen); most < maxSegments || most > maxSegments+1 {
		t.Fatalf("the record listed up to %d segments; want %d or %d (%v)", most, maxSegments, maxSegments+1, seen)
	}
	if last := seen[len(seen)-1]; last >= maxSegments {
		t.Fatalf("the record lists %d segments after %d commits; want them merged (%v)", last, n-1, seen)
	}
	checkExactlyOnce(t, n, parseFile(t, g.content("t", done.OutputFileID)), nil)
	// The batch is recorded final before its blobs are deleted.
	js := g.batch.st.(*jsStorage)
	deadline := time.Now().Add(waitLimit)
	for {
		infos, err := js.objs.List(t.Context())
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			t.Fatal(err)
		}
		var left []string
		for _, info := range infos {
			if strings.HasPrefix(info.Name, b.ID+"/") {
				left = append(left, info.Name)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blobs left behind: %v", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTakeover runs a batch on one Service, stops that Service mid-way
// (its claim is no longer renewed), and checks that a second Service on the
// same store takes the batch over once the lease passes and completes it,
// each line once.
func TestTakeover(t *testing.T) {
	// 80 lines, 4 at a time, take at least 2 s: the first commit (at 1 s)
	// finds the batch half done. At 5 ms a line the whole batch could end
	// before it.
	backend := newSimBackend(t, 100*time.Millisecond)
	g := startGateway(t, backend, gatewayOpts{window: 4, lease: time.Second})
	const n = 80
	b := g.mustCreate("t", g.mustUpload("t", inputFile(n, "o", sim)).ID)
	deadline := time.Now().Add(waitLimit)
	for g.getBatch("t", b.ID).RequestCounts.Completed < 8 {
		if time.Now().After(deadline) {
			t.Fatal("the batch made no progress")
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.batch.Close()
	stopped := g.getBatch("t", b.ID)
	if stopped.Status.Final() {
		t.Fatalf("the batch finished before the takeover: %+v", stopped)
	}
	second, err := New(t.Context(), Options{Jobs: g.jobs, Store: g.store, Window: 4, Lease: time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	g.batch = second
	done := g.await("t", b.ID, nil)
	if done.Status != StatusCompleted || done.RequestCounts.Completed != n {
		t.Fatalf("after the takeover: %s %+v", done.Status, done.RequestCounts)
	}
	checkExactlyOnce(t, n, parseFile(t, g.content("t", done.OutputFileID)), nil)
	for i := range n {
		if c := backend.callsFor(fmt.Sprintf("o-%d", i)); c != 1 {
			t.Fatalf("line %d reached the backend %d times", i, c)
		}
	}
}

// TestCancelAfterTakeover stops the Service running a batch while its
// lines run, cancels the batch, and checks that the Service taking it
// over adopts the jobs the first one had submitted: their results are
// kept, and no further line runs.
func TestCancelAfterTakeover(t *testing.T) {
	backend := newSimBackend(t, 0)
	backend.hold()
	defer backend.release()
	g := startGateway(t, backend, gatewayOpts{window: 4, lease: time.Second})
	const n = 40
	b := g.mustCreate("t", g.mustUpload("t", inputFile(n, "a", sim)).ID)
	deadline := time.Now().Add(waitLimit)
	for {
		rec, err := g.batch.st.batch(t.Context(), "t", b.ID)
		if err == nil && len(rec.Waiting) == 4 && backend.gated.Load() == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the window never filled: %d at the backend", backend.gated.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.batch.Close()
	if code, body := g.do(http.MethodPost, "/v1/batches/"+b.ID+"/cancel", "t", "", nil); code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, body)
	}
	second, err := New(t.Context(), Options{Jobs: g.jobs, Store: g.store, Window: 4, Lease: time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	g.batch = second
	// The running lines finish after the takeover.
	time.Sleep(1500 * time.Millisecond)
	backend.release()
	done := g.await("t", b.ID, nil)
	if done.Status != StatusCancelled || done.RequestCounts.Completed != 4 || done.RequestCounts.Failed != n-4 {
		t.Fatalf("after the takeover: %s %+v", done.Status, done.RequestCounts)
	}
	output := parseFile(t, g.content("t", done.OutputFileID))
	checkExactlyOnce(t, n, output, parseFile(t, g.content("t", done.ErrorFileID)))
	if calls := backend.calls.Load(); calls != 4 {
		t.Fatalf("the backend got %d requests, want the 4 running at the cancel", calls)
	}
}
