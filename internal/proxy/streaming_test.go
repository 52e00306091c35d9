package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// A stream's inter-token latency is the mean gap between the reads that
// complete events, and its latency sample for p2c_ewma adds the decoding
// time of a nominal stream to its time to first token, so a replica slow to
// decode looks slow.
func TestStreamInterTokenLatency(t *testing.T) {
	const events = 5
	next := make(chan struct{}, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			if i > 0 {
				<-next
			}
			fmt.Fprintf(w, "data: {\"i\":%d}\n\n", i)
			w.(http.Flusher).Flush()
		}
	}))
	defer be.Close()
	clk := clockwork.NewFakeClock()
	p := New(nil, clk)
	pl := pool(t, be.URL)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader("{}"))
	res := p.Serve(w, r, &Request{Pool: pl, Body: []byte("{}"), Observer: ObserveFunc(func(_ http.Header, b []byte) {
		clk.Advance(10 * time.Millisecond) // the next event comes 10ms later
		select {
		case next <- struct{}{}:
		default:
		}
	})})
	if res.Error != nil || w.Code != 200 {
		t.Fatalf("status %d, error %v", w.Code, res.Error)
	}
	if got := strings.Count(w.Body.String(), "\n\n"); got != events {
		t.Fatalf("%d events relayed, want %d", got, events)
	}
	if res.InterTokenGaps != events-1 || res.InterToken != 10*time.Millisecond {
		t.Errorf("inter-token latency %v over %d gaps, want 10ms over %d", res.InterToken, res.InterTokenGaps, events-1)
	}
	want := float64((refStreamEvents - 1) * 10 * time.Millisecond) // first token at once, then 31 gaps
	// The pool's estimate decays on the real clock: allow a little.
	if got := pl.Backends()[0].Cost(); got < 0.99*want || got > want {
		t.Errorf("latency estimate %v, want %v", time.Duration(got), time.Duration(want))
	}
}
