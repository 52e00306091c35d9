package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
	"github.com/sluice-ai/sluice/internal/jobs/redisstore"
	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// waitLimit bounds every wait of the tests; it only matters when one fails.
const waitLimit = 60 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// simBackend is a model server like `sluice sim`: it answers chat
// completions and embeddings with JSON that echoes the request, 400 for
// model "bad-request", and waits on gate (when set) before answering.
type simBackend struct {
	*httptest.Server
	calls atomic.Int64
	gated atomic.Int64 // requests waiting at the gate
	delay time.Duration

	mu     sync.Mutex
	gate   chan struct{} // closed: answer; nil: answer at once
	byUser map[string]int
}

func newSimBackend(t testing.TB, delay time.Duration) *simBackend {
	b := &simBackend{delay: delay, byUser: make(map[string]int)}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Close)
	return b
}

// hold makes requests wait until release.
func (b *simBackend) hold() {
	b.mu.Lock()
	b.gate = make(chan struct{})
	b.mu.Unlock()
}

func (b *simBackend) release() {
	b.mu.Lock()
	if b.gate != nil {
		close(b.gate)
		b.gate = nil
	}
	b.mu.Unlock()
}

// releaseOne lets the requests now waiting at the gate through and keeps
// the gate closed for the next ones.
func (b *simBackend) releaseOne() {
	b.mu.Lock()
	old := b.gate
	b.gate = make(chan struct{})
	b.mu.Unlock()
	if old != nil {
		close(old)
	}
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *simBackend) serve(w http.ResponseWriter, r *http.Request) {
	b.calls.Add(1)
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
		Input any `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	content := fmt.Sprint(req.Input)
	if len(req.Messages) > 0 {
		content = req.Messages[0].Content
	}
	b.mu.Lock()
	b.byUser[content]++
	gate := b.gate
	b.mu.Unlock()
	if gate != nil {
		b.gated.Add(1)
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		b.gated.Add(-1)
		if r.Context().Err() != nil {
			return
		}
	}
	if b.delay > 0 {
		select {
		case <-time.After(b.delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if req.Model == "bad-request" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"message":"the backend refuses %s","type":"invalid_request_error","code":"bad"}}`, content)
		return
	}
	fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
		req.Model, "echo: "+content)
}

// callsFor counts the requests the backend saw with this user content.
func (b *simBackend) callsFor(content string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byUser[content]
}

// gateway is a jobs.Service and a batch Service on one embedded store,
// with the jobs' Exec proxying to a backend, and the APIs served by one
// httptest server as the gateway would route them.
type gateway struct {
	t       testing.TB
	store   closableStore
	jobs    *jobs.Service
	batch   *Service
	backend *simBackend
	srv     *httptest.Server
}

// closableStore is a job store the test closes.
type closableStore interface {
	jobs.Store
	io.Closer
}

type gatewayOpts struct {
	// redis, when set, holds jobs and batches instead of the embedded
	// store.
	redis *redistest.Server
	// sideRedis, when set, keeps the batch data in Redis beside a job store
	// that has no storage of its own (as the amqp and kafka stores).
	sideRedis  *redistest.Server
	dir        string
	window     int
	maxFile    int64
	lease      time.Duration
	clock      clockwork.Clock
	jobSlots   int
	maxBodyLen int
	// fileRetention is Options.FileRetention.
	fileRetention time.Duration
}

func startGateway(t testing.TB, backend *simBackend, o gatewayOpts) *gateway {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	ctx := context.Background()
	var store closableStore
	var err error
	if o.redis != nil {
		prefix := strings.NewReplacer("{", "", "}", "").Replace(redistest.UniquePrefix(t))
		store, err = redisstore.Open(ctx, o.redis.Client(t), redisstore.Options{Prefix: prefix, Lease: 2 * time.Second, Logger: testLogger()})
	} else {
		store, err = natsstore.OpenEmbedded(ctx, o.dir, natsstore.Options{Lease: 2 * time.Second, Logger: testLogger()})
	}
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(backend.URL)
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	svc, err := jobs.New(ctx, jobs.Options{
		Store: store, Exec: proxy, Concurrency: max(o.jobSlots, 8),
		RetryBackoff: 10 * time.Millisecond, Logger: testLogger(),
	})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	bopts := Options{
		Jobs: svc, Store: store, Window: o.window, MaxFileSize: o.maxFile,
		Lease: o.lease, Clock: o.clock, Logger: testLogger(), MaxRequestBody: o.maxBodyLen,
		FileRetention: o.fileRetention,
	}
	if o.sideRedis != nil {
		bopts.Store = opaqueStore{store}
		bopts.Redis = o.sideRedis.Client(t)
	}
	b, err := New(ctx, bopts)
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, store: store, jobs: svc, batch: b, backend: backend}
	g.srv = httptest.NewServer(g.handler())
	t.Cleanup(g.close)
	return g
}

// opaqueStore hides what the store offers beyond jobs.Store.
type opaqueStore struct{ jobs.Store }

func (g *gateway) close() {
	g.srv.Close()
	g.batch.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.jobs.Close(ctx)
	g.store.Close()
}

func tenantOf(r *http.Request) string { return r.Header.Get("X-Tenant") }

// validate accepts model "sim" (pool chat) and "bad-request" (which the
// backend refuses), forbids "secret" to every tenant but "boss", and knows
// no other model.
func validate(r *http.Request, _, _ string, body []byte) (string, *openai.Error) {
	var m struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return "", openai.BadRequest("invalid JSON body")
	}
	switch m.Model {
	case "sim", "bad-request":
		return "chat", nil
	case "secret":
		if tenantOf(r) != "boss" {
			return "", openai.Forbidden(fmt.Sprintf("model %q is not allowed for this key", m.Model))
		}
		return "chat", nil
	}
	return "", openai.NotFound("model_not_found", fmt.Sprintf("model %q does not exist", m.Model))
}

// handler routes the APIs as the gateway does after authentication.
func (g *gateway) handler() http.Handler {
	api := g.batch.Handler(tenantOf, validate)
	jobsAPI := g.jobs.Handler(tenantOf, validate)
	mux := http.NewServeMux()
	mux.Handle("/v1/files", api)
	mux.Handle("/v1/files/", api)
	mux.Handle("/v1/batches", api)
	mux.Handle("/v1/batches/", api)
	mux.Handle("/v1/jobs", jobsAPI)
	mux.Handle("/v1/jobs/", jobsAPI)
	// The SDK authenticates with a bearer key: here the key is the tenant.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && r.Header.Get("X-Tenant") == "" {
			r.Header.Set("X-Tenant", k)
		}
		mux.ServeHTTP(w, r)
	})
}

// do sends a request to the gateway as tenant.
func (g *gateway) do(method, path, tenant, contentType string, body []byte) (int, []byte) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, g.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("X-Tenant", tenant)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// upload posts content as a batch file and returns the status and body.
func (g *gateway) upload(tenant, purpose string, content []byte) (int, []byte) {
	g.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if purpose != "" {
		_ = mw.WriteField("purpose", purpose)
	}
	fw, _ := mw.CreateFormFile("file", "input.jsonl")
	_, _ = fw.Write(content)
	_ = mw.Close()
	return g.do(http.MethodPost, "/v1/files", tenant, mw.FormDataContentType(), buf.Bytes())
}

func (g *gateway) mustUpload(tenant string, content []byte) fileObject {
	g.t.Helper()
	code, body := g.upload(tenant, "batch", content)
	if code != http.StatusOK {
		g.t.Fatalf("upload: %d %s", code, body)
	}
	return decode[fileObject](g.t, body)
}

func (g *gateway) createBatch(tenant, fileID, endpoint string) (int, []byte) {
	g.t.Helper()
	body, _ := json.Marshal(map[string]any{
		"input_file_id": fileID, "endpoint": endpoint, "completion_window": "24h",
		"metadata": map[string]string{"purpose": "test"},
	})
	return g.do(http.MethodPost, "/v1/batches", tenant, "application/json", body)
}

func (g *gateway) mustCreate(tenant, fileID string) batchObject {
	g.t.Helper()
	code, body := g.createBatch(tenant, fileID, "/v1/chat/completions")
	if code != http.StatusOK {
		g.t.Fatalf("create batch: %d %s", code, body)
	}
	return decode[batchObject](g.t, body)
}

func (g *gateway) getBatch(tenant, id string) batchObject {
	g.t.Helper()
	code, body := g.do(http.MethodGet, "/v1/batches/"+id, tenant, "", nil)
	if code != http.StatusOK {
		g.t.Fatalf("get batch: %d %s", code, body)
	}
	return decode[batchObject](g.t, body)
}

// await polls batch id until it is in a final state, and returns it.
func (g *gateway) await(tenant, id string, step func()) batchObject {
	g.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		b := g.getBatch(tenant, id)
		if b.Status.Final() {
			return b
		}
		if step != nil {
			step()
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.t.Fatalf("batch %s did not finish in %s: %+v", id, waitLimit, g.getBatch(tenant, id))
	return batchObject{}
}

// content reads a file's content as tenant.
func (g *gateway) content(tenant string, id *string) []byte {
	g.t.Helper()
	if id == nil {
		return nil
	}
	code, body := g.do(http.MethodGet, "/v1/files/"+*id+"/content", tenant, "", nil)
	if code != http.StatusOK {
		g.t.Fatalf("file content %s: %d %s", *id, code, body)
	}
	return body
}

func decode[T any](t testing.TB, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return v
}

// inputFile builds a JSONL input file of n chat requests; line i has
// custom_id "req-<i>" and content "<prefix>-<i>"; model(i) names its
// model.
func inputFile(n int, prefix string, model func(i int) string) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"%s-%d"}]}}`+"\n",
			i, model(i), prefix, i)
	}
	return b.Bytes()
}

func sim(int) string { return "sim" }

// fileLine is a line of an output or error file.
type fileLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func parseFile(t testing.TB, data []byte) []fileLine {
	t.Helper()
	var out []fileLine
	for l := range bytes.SplitSeq(bytes.TrimSpace(data), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		out = append(out, decode[fileLine](t, l))
	}
	return out
}
