package cache

import (
	"bytes"
	"context"
	"fmt"
	"github.com/sluice-ai/sluice/internal/redistest"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	redis.SetLogger(discardLogger{})
	goleak.VerifyTestMain(m)
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const chatBody = `{"model":"sim-llm","messages":[{"role":"user","content":"hello"}],"max_tokens":8}`

// backend is an upstream that counts its calls and answers with handle.
type backend struct {
	*httptest.Server
	calls  atomic.Int32
	handle atomic.Pointer[http.HandlerFunc]
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	b := &backend{}
	b.set(h)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.calls.Add(1)
		(*b.handle.Load())(w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) set(h http.HandlerFunc) { b.handle.Store(&h) }

// jsonAnswer answers with a body that names the call, so tests can tell
// responses apart.
func (b *backend) jsonAnswer(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Backend", "b1")
	fmt.Fprintf(w, `{"call":%d,"echo":%q}`, b.calls.Load(), body)
}

// gateway is a front server that does what the gateway will: build the key
// from the body, and Serve with a reverse proxy to the backend as next.
type gateway struct {
	*httptest.Server
	cache *Cache
}

func newGateway(t *testing.T, c *Cache, upstream *backend, ttl time.Duration) *gateway {
	u, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.FlushInterval = -1
	proxy.ErrorLog = discardStdLogger()
	g := &gateway{cache: c}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		key, err := KeyFor("chat", r.URL.Path, body, "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Request-Id", "req-"+r.Header.Get("X-Test-Seq"))
		var aborted bool
		c.Serve(w, r, key, ttl, fetchOf(proxy, r, &aborted))
		if aborted {
			panic(http.ErrAbortHandler) // as the gateway aborts a broken response
		}
	}))
	g.Server.Config.ErrorLog = discardStdLogger()
	t.Cleanup(g.Close)
	return g
}

// newCache builds a Cache, with 32 MiB of memory unless opts says
// otherwise.
func newCache(t testing.TB, opts Options) *Cache {
	t.Helper()
	if opts.MemoryBytes == 0 {
		opts.MemoryBytes = 32 << 20
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type response struct {
	status int
	header http.Header
	body   string
	err    error
}

func post(url, body string, header ...string) response {
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return response{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

func mustPost(t *testing.T, url, body string, header ...string) response {
	t.Helper()
	r := post(url, body, header...)
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r
}

func TestHitReplaysWithoutBackend(t *testing.T) {
	b := newBackend(t, nil)
	b.set(b.jsonAnswer)
	reg := prometheus.NewRegistry()
	g := newGateway(t, newCache(t, Options{Registerer: reg}), b, time.Minute)

	miss := mustPost(t, g.URL, chatBody)
	if got := miss.header.Get("X-Sluice-Cache"); got != "miss" {
		t.Fatalf("first X-Sluice-Cache = %q, want miss", got)
	}
	// The same request, written differently.
	hit := mustPost(t, g.URL, ` { "max_tokens": 8, "messages": [ {"content":"hello", "role":"user"} ], "model": "sim-llm" } `)
	if got := hit.header.Get("X-Sluice-Cache"); got != "hit" {
		t.Fatalf("second X-Sluice-Cache = %q, want hit", got)
	}
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("backend called %d times, want 1", n)
	}
	if hit.body != miss.body || hit.status != miss.status {
		t.Fatalf("hit = %d %q, miss = %d %q", hit.status, hit.body, miss.status, miss.body)
	}
	for _, k := range []string{"Content-Type", "Content-Length", "X-Backend"} {
		if hit.header.Get(k) != miss.header.Get(k) || miss.header.Get(k) == "" {
			t.Errorf("header %s: hit %q, miss %q", k, hit.header.Get(k), miss.header.Get(k))
		}
	}
	if hit.header.Get("X-Request-Id") == miss.header.Get("X-Request-Id") && miss.header.Get("X-Request-Id") != "req-" {
		t.Errorf("X-Request-Id replayed from the cache")
	}

	// A different request is a different entry.
	other := mustPost(t, g.URL, strings.Replace(chatBody, "hello", "bye", 1))
	if other.header.Get("X-Sluice-Cache") != "miss" || b.calls.Load() != 2 {
		t.Fatalf("different body: %s, %d calls", other.header.Get("X-Sluice-Cache"), b.calls.Load())
	}
	if got := testutil.ToFloat64(g.cache.m.reqs.WithLabelValues("chat", "hit")); got != 1 {
		t.Errorf(`sluice_cache_requests_total{pool="chat",result="hit"} = %v, want 1`, got)
	}
	if got := testutil.ToFloat64(g.cache.m.reqs.WithLabelValues("chat", "miss")); got != 2 {
		t.Errorf(`sluice_cache_requests_total{pool="chat",result="miss"} = %v, want 2`, got)
	}
}

func TestTTLExpiry(t *testing.T) {
	b := newBackend(t, nil)
	b.set(b.jsonAnswer)
	clock := clockwork.NewFakeClockAt(t0)
	g := newGateway(t, newCache(t, Options{Clock: clock}), b, 10*time.Second)

	first := mustPost(t, g.URL, chatBody)
	waitStored(t, g.cache, chatBody, first.body) // before the clock moves
	clock.Advance(9 * time.Second)
	if r := mustPost(t, g.URL, chatBody); r.header.Get("X-Sluice-Cache") != "hit" || r.body != first.body {
		t.Fatalf("within the TTL: %s %q", r.header.Get("X-Sluice-Cache"), r.body)
	}
	clock.Advance(time.Second)
	r := mustPost(t, g.URL, chatBody)
	if r.header.Get("X-Sluice-Cache") != "miss" || r.body == first.body {
		t.Fatalf("after the TTL: %s %q", r.header.Get("X-Sluice-Cache"), r.body)
	}
	if n := b.calls.Load(); n != 2 {
		t.Fatalf("backend called %d times, want 2", n)
	}
	// Refreshing an entry (no-cache) gives it a whole TTL again.
	clock.Advance(9 * time.Second)
	fresh := mustPost(t, g.URL, chatBody, "Cache-Control", "no-cache")
	waitStored(t, g.cache, chatBody, fresh.body)
	clock.Advance(5 * time.Second)
	if r := mustPost(t, g.URL, chatBody); r.header.Get("X-Sluice-Cache") != "hit" || r.body != fresh.body {
		t.Fatalf("5s after a refresh with a 10s TTL: %s %q, want a hit on %q", r.header.Get("X-Sluice-Cache"), r.body, fresh.body)
	}
}

// waitStored waits until the entry for body holds want. The client has the
// whole response a moment before the handler stores it.
func waitStored(t *testing.T, c *Cache, body, want string) {
	t.Helper()
	key, _ := KeyFor("chat", "/v1/chat/completions", []byte(body), "")
	waitFor(t, "the response to be stored", func() bool {
		e, ok := c.memGet(key)
		return ok && string(e.body) == want
	})
}

// direct serves one request through c without HTTP, with next answering.
func direct(c *Cache, body string, next http.HandlerFunc, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	key, err := KeyFor("chat", r.URL.Path, []byte(body), "")
	if err != nil {
		panic(err)
	}
	w := httptest.NewRecorder()
	c.Serve(w, r, key, time.Minute, fetchOf(next, r, nil))
	return w
}

// fetchOf adapts a handler that aborts a broken response by panicking with
// http.ErrAbortHandler (as httputil.ReverseProxy does) to a Fetch; aborted,
// when not nil, records that it did.
func fetchOf(h http.Handler, r *http.Request, aborted *bool) Fetch {
	return func(w http.ResponseWriter) (complete bool) {
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					panic(v)
				}
				complete = false
				if aborted != nil {
					*aborted = true
				}
			}
		}()
		h.ServeHTTP(w, r)
		return true
	}
}

func TestMemoryBound(t *testing.T) {
	const bound = 64 << 10
	c := newCache(t, Options{MemoryBytes: bound})
	payload := strings.Repeat("x", 4<<10)
	for i := range 100 {
		w := direct(c, fmt.Sprintf(`{"i":%d}`, i), func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, payload)
		})
		if w.Code != http.StatusOK {
			t.Fatal(w.Code)
		}
	}
	c.mem.CleanUp()
	if size := c.mem.WeightedSize(); size > bound {
		t.Fatalf("cache holds %d bytes, bound %d", size, bound)
	}
	if n := c.mem.EstimatedSize(); n == 0 || n >= 100 {
		t.Fatalf("cache holds %d of 100 entries of 4KiB under a 64KiB bound", n)
	}
	// An entry over MaxEntryBytes (a quarter of the memory) is not stored.
	big := strings.Repeat("y", bound/4+1)
	next := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, big) }
	direct(c, `{"big":true}`, next)
	if w := direct(c, `{"big":true}`, next); w.Header().Get("X-Sluice-Cache") != "miss" || w.Body.String() != big {
		t.Fatalf("oversized response: %s, %d bytes", w.Header().Get("X-Sluice-Cache"), w.Body.Len())
	}
}

// waitFor polls cond until it holds; for work the test has already caused.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// flightWaiters returns how many requests wait on the flight for body.
func flightWaiters(c *Cache, body string) int {
	key, _ := KeyFor("chat", "/v1/chat/completions", []byte(body), "")
	v, ok := c.flights.Load(key.sum)
	if !ok {
		return 0
	}
	return int(v.(*flight).waiters.Load())
}

func TestConcurrentMissesMakeOneCall(t *testing.T) {
	release := make(chan struct{})
	b := newBackend(t, nil)
	b.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		b.jsonAnswer(w, r)
	})
	c := newCache(t, Options{})
	g := newGateway(t, c, b, time.Minute)

	const n = 50
	results := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i] = post(g.URL, chatBody) })
	}
	waitFor(t, "49 requests to wait for the first", func() bool { return flightWaiters(c, chatBody) == n-1 })
	close(release)
	wg.Wait()

	if got := b.calls.Load(); got != 1 {
		t.Fatalf("%d upstream calls for %d identical requests, want 1", got, n)
	}
	results0 := results[0]
	misses := 0
	for _, r := range results {
		if r.err != nil || r.status != http.StatusOK || r.body != results0.body {
			t.Fatalf("response %d %q (%v), want 200 %q", r.status, r.body, r.err, results0.body)
		}
		if r.header.Get("X-Sluice-Cache") == "miss" {
			misses++
		}
	}
	if misses != 1 {
		t.Fatalf("%d responses say miss, want 1", misses)
	}
}

func TestFailedLeaderFollowersCallThemselves(t *testing.T) {
	tests := []struct {
		name  string
		first http.HandlerFunc
	}{
		{"aborted mid-body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"partial":`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops
		}},
		{"500", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}},
		{"upstream no-store", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			_, _ = io.WriteString(w, `{"private":true}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			b := newBackend(t, nil)
			var first atomic.Bool
			b.set(func(w http.ResponseWriter, r *http.Request) {
				if first.CompareAndSwap(false, true) {
					<-release
					tt.first(w, r)
					return
				}
				b.jsonAnswer(w, r)
			})
			c := newCache(t, Options{})
			g := newGateway(t, c, b, time.Minute)

			const followers = 5
			results := make([]response, followers+1)
			var wg sync.WaitGroup
			wg.Go(func() { results[0] = post(g.URL, chatBody) })
			waitFor(t, "the first request upstream", func() bool { return b.calls.Load() == 1 })
			for i := 1; i <= followers; i++ {
				wg.Go(func() { results[i] = post(g.URL, chatBody) })
			}
			waitFor(t, "the followers to wait", func() bool { return flightWaiters(c, chatBody) == followers })
			close(release)
			wg.Wait()

			if got := b.calls.Load(); got != followers+1 {
				t.Fatalf("%d upstream calls, want %d: each follower calls for itself", got, followers+1)
			}
			for i, r := range results[1:] {
				if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"call"`) {
					t.Fatalf("follower %d got %d %q (%v); want its own good answer", i, r.status, r.body, r.err)
				}
				if r.header.Get("X-Sluice-Cache") != "miss" {
					t.Fatalf("follower %d: X-Sluice-Cache %q, want miss", i, r.header.Get("X-Sluice-Cache"))
				}
			}
			// The followers' good answers were stored.
			if r := mustPost(t, g.URL, chatBody); r.header.Get("X-Sluice-Cache") != "hit" {
				t.Fatalf("after the followers: %s, want hit", r.header.Get("X-Sluice-Cache"))
			}
		})
	}
}

func TestCacheControl(t *testing.T) {
	b := newBackend(t, nil)
	b.set(b.jsonAnswer)
	g := newGateway(t, newCache(t, Options{}), b, time.Minute)

	// no-store: upstream, nothing stored.
	r := mustPost(t, g.URL, chatBody, "Cache-Control", "no-store")
	if r.header.Get("X-Sluice-Cache") != "bypass" || b.calls.Load() != 1 {
		t.Fatalf("no-store: %s, %d calls", r.header.Get("X-Sluice-Cache"), b.calls.Load())
	}
	first := mustPost(t, g.URL, chatBody)
	if first.header.Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("after no-store: %s, want miss (nothing stored)", first.header.Get("X-Sluice-Cache"))
	}
	// no-cache: skips the stored entry, and stores the fresh answer.
	fresh := mustPost(t, g.URL, chatBody, "Cache-Control", "no-cache")
	if fresh.header.Get("X-Sluice-Cache") != "bypass" || fresh.body == first.body || b.calls.Load() != 3 {
		t.Fatalf("no-cache: %s %q, %d calls", fresh.header.Get("X-Sluice-Cache"), fresh.body, b.calls.Load())
	}
	if r := mustPost(t, g.URL, chatBody); r.header.Get("X-Sluice-Cache") != "hit" || r.body != fresh.body {
		t.Fatalf("after no-cache: %s %q, want a hit on the fresh answer %q", r.header.Get("X-Sluice-Cache"), r.body, fresh.body)
	}
	// no-store combined with other directives, in any case.
	if r := mustPost(t, g.URL, chatBody, "Cache-Control", "max-stale=5, No-Store"); r.header.Get("X-Sluice-Cache") != "bypass" {
		t.Fatalf("No-Store among others: %s", r.header.Get("X-Sluice-Cache"))
	}
}

func TestOnlyCompleteSuccessesAreStored(t *testing.T) {
	tests := []struct {
		name string
		next http.HandlerFunc
	}{
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{"429", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) }},
		{"private", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "private, max-age=60")
			_, _ = io.WriteString(w, "{}")
		}},
		{"set-cookie", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Set-Cookie", "s=1")
			_, _ = io.WriteString(w, "{}")
		}},
		{"vary", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Vary", "Accept-Language")
			_, _ = io.WriteString(w, "{}")
		}},
		{"gzip", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = io.WriteString(w, "\x1f\x8b")
		}},
		{"short body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "{}")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, Options{})
			var calls atomic.Int32
			next := func(w http.ResponseWriter, r *http.Request) { calls.Add(1); tt.next(w, r) }
			direct(c, chatBody, next)
			w := direct(c, chatBody, next)
			if w.Header().Get("X-Sluice-Cache") != "miss" || calls.Load() != 2 {
				t.Fatalf("second request: %s after %d calls; the response must not be stored", w.Header().Get("X-Sluice-Cache"), calls.Load())
			}
		})
	}
}

func TestBypassedRequests(t *testing.T) {
	c := newCache(t, Options{})
	var calls atomic.Int32
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1); _, _ = io.WriteString(w, "{}") })
	key, _ := KeyFor("chat", "/v1/models", nil, "")
	for range 2 {
		r := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
		w := httptest.NewRecorder()
		c.Serve(w, r, key, time.Minute, fetchOf(next, r, nil))
		if w.Header().Get("X-Sluice-Cache") != "" {
			t.Fatalf("GET got X-Sluice-Cache %q", w.Header().Get("X-Sluice-Cache"))
		}
	}
	for range 2 {
		r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody))
		c.Serve(httptest.NewRecorder(), r, key, 0, fetchOf(next, r, nil))
	}
	if calls.Load() != 4 {
		t.Fatalf("%d calls, want 4: GETs and ttl 0 are not cached", calls.Load())
	}
}

// flushLog is a ResponseWriter that records what each Flush sent.
type flushLog struct {
	header  http.Header
	status  int
	pending bytes.Buffer
	flushed []string
}

func (f *flushLog) Header() http.Header { return f.header }
func (f *flushLog) WriteHeader(code int) {
	if f.status == 0 {
		f.status = code
	}
}
func (f *flushLog) Write(p []byte) (int, error) {
	if f.status == 0 {
		f.status = http.StatusOK
	}
	return f.pending.Write(p)
}
func (f *flushLog) Flush() {
	f.flushed = append(f.flushed, f.pending.String())
	f.pending.Reset()
}

func sseEvents() []string {
	return []string{
		"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
		": a comment\nevent: message\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
		"data: [DONE]\n\n",
	}
}

// streamer answers with sseEvents, flushing each, in odd pieces.
func streamer(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache") // what OpenAI sends: no-cache is not no-store
	for _, e := range sseEvents() {
		half := len(e) / 2
		_, _ = io.WriteString(w, e[:half])
		_, _ = io.WriteString(w, e[half:])
		w.(http.Flusher).Flush()
	}
}

func TestStreamRecordedAndReplayed(t *testing.T) {
	b := newBackend(t, streamer)
	g := newGateway(t, newCache(t, Options{}), b, time.Minute)
	body := `{"model":"sim-llm","stream":true,"messages":[]}`

	first := mustPost(t, g.URL, body)
	second := mustPost(t, g.URL, body)
	if first.header.Get("X-Sluice-Cache") != "miss" || second.header.Get("X-Sluice-Cache") != "hit" || b.calls.Load() != 1 {
		t.Fatalf("X-Sluice-Cache %s then %s, %d calls", first.header.Get("X-Sluice-Cache"), second.header.Get("X-Sluice-Cache"), b.calls.Load())
	}
	want := strings.Join(sseEvents(), "")
	if first.body != want || second.body != want {
		t.Fatalf("stream bodies differ:\nfirst  %q\nsecond %q\nwant   %q", first.body, second.body, want)
	}
	if second.header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("replayed Content-Type %q", second.header.Get("Content-Type"))
	}
	// The non-streamed form of the request is another entry.
	if r := mustPost(t, g.URL, `{"model":"sim-llm","stream":false,"messages":[]}`); r.header.Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("stream:false shared the stream's entry")
	}

	// Replayed event by event, each flushed on its own.
	c := newCache(t, Options{})
	direct(c, body, streamer)
	w := &flushLog{header: http.Header{}}
	key, _ := KeyFor("chat", "/v1/chat/completions", []byte(body), "")
	sr := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	c.Serve(w, sr, key, time.Minute, fetchOf(http.HandlerFunc(streamer), sr, nil))
	if w.header.Get("X-Sluice-Cache") != "hit" {
		t.Fatalf("direct replay: %s", w.header.Get("X-Sluice-Cache"))
	}
	if got, want := w.flushed, sseEvents(); strings.Join(got, "|") != strings.Join(want, "|") || w.pending.Len() != 0 {
		t.Fatalf("flushed pieces:\n%q\nwant one per event:\n%q", got, want)
	}
}

func TestStreamCutIsNotStored(t *testing.T) {
	cut := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, sseEvents()[0])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	b := newBackend(t, cut)
	g := newGateway(t, newCache(t, Options{}), b, time.Minute)
	body := `{"model":"sim-llm","stream":true}`
	if r := post(g.URL, body); r.err == nil && r.body == strings.Join(sseEvents(), "") {
		t.Fatal("a cut stream arrived whole")
	}
	b.set(streamer)
	if r := mustPost(t, g.URL, body); r.header.Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("after a cut stream: %s, want miss", r.header.Get("X-Sluice-Cache"))
	}
}

func TestEventSplitter(t *testing.T) {
	body := strings.Join(sseEvents(), "") + "data: trailing"
	for step := 1; step <= len(body); step++ {
		var s eventSplitter
		var events []int32
		for i := 0; i < len(body); i += step {
			end := min(i+step, len(body))
			events = s.feed([]byte(body[:end]), i, events)
		}
		events = s.finish(len(body), events)
		var got []string
		start := int32(0)
		for _, e := range events {
			got = append(got, body[start:e])
			start = e
		}
		want := append(sseEvents(), "data: trailing")
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("step %d: events %q, want %q", step, got, want)
		}
	}
}

func TestRedisSharedBetweenReplicas(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.UniquePrefix(t)
	clock := clockwork.NewFakeClockAt(t0)
	a := newCache(t, Options{Redis: srv.Client(t), RedisPrefix: prefix, Clock: clock})
	bc := newCache(t, Options{Redis: srv.Client(t), RedisPrefix: prefix, Clock: clock})

	upstream := newBackend(t, streamer)
	ga := newGateway(t, a, upstream, time.Minute)
	gb := newGateway(t, bc, upstream, time.Minute)
	body := `{"model":"sim-llm","stream":true}`

	first := mustPost(t, ga.URL, body)
	key, _ := KeyFor("chat", "/v1/chat/completions", []byte(body), "")
	rdb := srv.Client(t)
	waitFor(t, "the entry in Redis", func() bool { return rdb.Exists(context.Background(), prefix+key.String()).Val() == 1 })

	second := mustPost(t, gb.URL, body)
	if second.header.Get("X-Sluice-Cache") != "hit" || second.body != first.body || upstream.calls.Load() != 1 {
		t.Fatalf("replica b: %s, %d calls, body equal %v", second.header.Get("X-Sluice-Cache"), upstream.calls.Load(), second.body == first.body)
	}
	// b now has it in memory too: no Redis needed.
	if _, ok := bc.mem.GetIfPresent(key.sum); !ok {
		t.Fatal("a Redis hit was not kept in memory")
	}
	ttl := rdb.PTTL(context.Background(), prefix+key.String()).Val()
	if ttl <= 0 || ttl > time.Minute {
		t.Fatalf("Redis TTL %v, want within the cache TTL", ttl)
	}

	// An entry past its time in Redis's copy is a miss.
	clock.Advance(time.Minute)
	c := newCache(t, Options{Redis: srv.Client(t), RedisPrefix: prefix, Clock: clock})
	if e := c.lookupRedis(context.Background(), key); e != nil {
		t.Fatal("expired entry served from Redis")
	}
}

func TestRedisOnly(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New accepted a cache with no memory and no Redis")
	}
	srv := redistest.Start(t)
	prefix := redistest.UniquePrefix(t)
	c, err := New(Options{Redis: srv.Client(t), RedisPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var calls atomic.Int32
	next := func(w http.ResponseWriter, r *http.Request) { calls.Add(1); _, _ = io.WriteString(w, "{}") }
	direct(c, chatBody, next)
	key, _ := KeyFor("chat", "/v1/chat/completions", []byte(chatBody), "")
	rdb := srv.Client(t)
	waitFor(t, "the entry in Redis", func() bool { return rdb.Exists(context.Background(), prefix+key.String()).Val() == 1 })
	if w := direct(c, chatBody, next); w.Header().Get("X-Sluice-Cache") != "hit" || calls.Load() != 1 {
		t.Fatalf("second request: %s after %d upstream calls, want a hit from Redis", w.Header().Get("X-Sluice-Cache"), calls.Load())
	}
}

func TestRedisDownIsAMiss(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.Private() {
		t.Skip("needs a private redis-server to stop")
	}
	reg := prometheus.NewRegistry()
	c := newCache(t, Options{Redis: srv.Client(t), RedisPrefix: redistest.UniquePrefix(t), Registerer: reg})
	srv.Stop()
	var calls atomic.Int32
	next := func(w http.ResponseWriter, r *http.Request) { calls.Add(1); _, _ = io.WriteString(w, "{}") }
	if w := direct(c, chatBody, next); w.Code != http.StatusOK || w.Header().Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("with Redis down: %d %s", w.Code, w.Header().Get("X-Sluice-Cache"))
	}
	if w := direct(c, chatBody, next); w.Header().Get("X-Sluice-Cache") != "hit" || calls.Load() != 1 {
		t.Fatalf("memory level with Redis down: %s, %d calls", w.Header().Get("X-Sluice-Cache"), calls.Load())
	}
	if got := testutil.ToFloat64(c.m.redisErrors.WithLabelValues("get")); got < 1 {
		t.Fatalf("sluice_cache_redis_errors_total{op=get} = %v", got)
	}
}

func TestEntryEncoding(t *testing.T) {
	e := &entry{
		status:  200,
		header:  http.Header{"Content-Type": {"text/event-stream"}, "X-Multi": {"a", "b"}},
		body:    []byte("data: 1\n\ndata: 2\n\n"),
		events:  []int32{9, 18},
		expires: t0.UnixNano(),
	}
	e.computeSize()
	got, err := decodeEntry(encodeEntry(e))
	if err != nil {
		t.Fatal(err)
	}
	if got.status != e.status || got.expires != e.expires || string(got.body) != string(e.body) ||
		fmt.Sprint(got.events) != fmt.Sprint(e.events) || fmt.Sprint(got.header) != fmt.Sprint(e.header) {
		t.Fatalf("round trip: %+v, want %+v", got, e)
	}
	plain := &entry{status: 200, header: http.Header{}, body: []byte("{}")}
	got, err = decodeEntry(encodeEntry(plain))
	if err != nil || got.events != nil {
		t.Fatalf("plain entry round trip: %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {2}, {1}, encodeEntry(e)[:10], append(encodeEntry(e), 0)} {
		if _, err := decodeEntry(bad); err == nil {
			t.Errorf("decodeEntry(%q) accepted", bad)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(&entry{status: 200, header: http.Header{"A": {"b"}}, body: []byte("x"), events: []int32{1}}))
	f.Add(encodeEntry(&entry{status: 404, header: http.Header{}, body: nil}))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEntry(data)
		if err != nil {
			return
		}
		again, err := decodeEntry(encodeEntry(e))
		if err != nil || string(again.body) != string(e.body) || fmt.Sprint(again.events) != fmt.Sprint(e.events) {
			t.Fatalf("re-encoding a decoded entry changed it: %v", err)
		}
		prev := int32(0)
		for _, end := range e.events {
			if end < prev || int(end) > len(e.body) {
				t.Fatalf("event ends %v outside a body of %d", e.events, len(e.body))
			}
			prev = end
		}
	})
}

// hitWriter is a minimal ResponseWriter for benchmarking hits.
type hitWriter struct {
	h http.Header
	n int
}

func (w *hitWriter) Header() http.Header         { return w.h }
func (w *hitWriter) WriteHeader(int)             {}
func (w *hitWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

func BenchmarkHit(b *testing.B) {
	c := newCache(b, Options{})
	answer := strings.Repeat(`{"choices":[{"message":{"content":"hello"}}]}`, 20)
	direct(c, chatBody, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, answer)
	})
	key, err := KeyFor("chat", "/v1/chat/completions", []byte(chatBody), "")
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	w := &hitWriter{h: http.Header{}}
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { b.Fatal("miss") })
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		c.Serve(w, r, key, time.Minute, fetchOf(next, r, nil))
	}
	if w.n == 0 {
		b.Fatal("nothing written")
	}
}

func discardStdLogger() *log.Logger { return log.New(io.Discard, "", 0) }
