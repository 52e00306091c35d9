package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
)

// TestWaitingStreamOpensAndReportsFailure: a stream still waiting after
// the keep-alive interval is opened with 200 and an SSE comment; an answer
// that then fails reaches the client as an error event, not a second
// status.
func TestWaitingStreamOpensAndReportsFailure(t *testing.T) {
	clk := clockwork.NewFakeClock()
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Request-Id", "r1")
	ws := keepWaiting(rec, clk)
	if err := clk.BlockUntilContext(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(waitKeepAlive)
	eventually(t, "the stream opened", func() bool {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return ws.opened
	})
	ws.Header().Set("Content-Type", "application/json")
	ws.WriteHeader(http.StatusServiceUnavailable)
	_, _ = ws.Write([]byte("{\n  \"error\": {\"message\": \"no replica became free within queue.timeout\"}\n}\n"))
	ws.finish()
	body := rec.Body.String()
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/event-stream" || rec.Header().Get("X-Request-Id") != "r1" {
		t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
	}
	want := ": waiting for a replica\n\nevent: error\ndata: {\"error\":{\"message\":\"no replica became free within queue.timeout\"}}\n\n"
	if body != want {
		t.Fatalf("body %q, want %q", body, want)
	}
}

// TestWaitingStreamAnsweredInTime: an answer that begins before the
// interval passes through untouched, with its own status and headers.
func TestWaitingStreamAnsweredInTime(t *testing.T) {
	clk := clockwork.NewFakeClock()
	rec := httptest.NewRecorder()
	ws := keepWaiting(rec, clk)
	ws.Header().Set("Content-Type", "application/json")
	ws.WriteHeader(http.StatusTooManyRequests)
	_, _ = ws.Write([]byte(`{"error":{}}`))
	clk.Advance(3 * waitKeepAlive)
	ws.finish()
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Content-Type") != "application/json" || strings.Contains(rec.Body.String(), "waiting") {
		t.Fatalf("%d %v %q", rec.Code, rec.Header(), rec.Body.String())
	}
}
